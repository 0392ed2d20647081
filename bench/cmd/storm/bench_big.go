package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// bigRow is one big config: `haproxy -c`, HAProxy's own master CLI
// reload and `baton reload`, idle, on the same binary and config.
type bigRow struct {
	Config string `json:"config"` // "big-backends", "big-certs"
	What   string `json:"what"`
	Proxy  string `json:"proxy"`
	Binary string `json:"binary"`
	// Check is `haproxy -c -q` on the config.
	Check  durStats   `json:"haproxy_check"`
	Native latencyRow `json:"native"`
	Baton  latencyRow `json:"baton"`
	// API is baton's reload through the control API from the bench
	// process (no CLI start, as the native command is sent).
	API latencyRow `json:"baton_api"`
	// Ratio is the baton ack p50 over the native ack p50; RatioAPI the
	// same for API.
	Ratio    float64 `json:"ratio_p50"`
	RatioAPI float64 `json:"ratio_api_p50"`
	// CertGenS is how long generating the certificates took (once).
	CertGenS float64 `json:"cert_gen_s,omitempty"`
}

// bigConfigs are the big configs of the plan (none sized 0).
func (b *bench) bigConfigs() []bigConfig {
	var out []bigConfig
	if n := b.plan.BigBackends; n > 0 {
		out = append(out, bigConfig{Name: "big-backends", Backends: n,
			What: fmt.Sprintf("%s backends (one server each, no checks)", num(n))})
	}
	if n := b.plan.BigCerts; n > 0 {
		out = append(out, bigConfig{Name: "big-certs", Certs: n,
			What: fmt.Sprintf("%s TLS certificates (EC P-256, one SNI name each, `crt-list`)", num(n))})
	}
	return out
}

// certsFor writes the plan's certificates once, under the bench's root,
// and sets c.CrtList.
func (b *bench) certsFor(c *bigConfig) (time.Duration, error) {
	if c.Certs == 0 {
		return 0, nil
	}
	if b.crtList == "" {
		start := time.Now()
		list, err := writeCerts(filepath.Join(b.e.root, "certs"), c.Certs)
		if err != nil {
			return 0, err
		}
		b.crtList, b.certGen = list, time.Since(start)
		b.logf("wrote %s certificates in %.1f s", num(c.Certs), b.certGen.Seconds())
	}
	c.CrtList = b.crtList
	return b.certGen, nil
}

// bigFamily measures idle reloads of the big configs on the HAProxy of
// the big scenarios (the first --haproxy of 3.1 or later): ids
// latency/big-backends/{ref-check,haproxy-mw,baton-haproxy} and
// latency/big-certs/....
func (b *bench) bigFamily(ctx context.Context) {
	e := b.e.withHAProxy(b.rep.Proxies.Big)
	for _, c := range b.bigConfigs() {
		ids := []string{"latency/" + c.Name + "/ref-check", "latency/" + c.Name + "/haproxy-mw", "latency/" + c.Name + "/baton-haproxy", "latency/" + c.Name + "/baton-haproxy-api"}
		if !b.want(ids[0]) && !b.want(ids[1]) && !b.want(ids[2]) && !b.want(ids[3]) || ctx.Err() != nil {
			continue
		}
		gen, err := b.certsFor(&c)
		if err != nil {
			b.fail("latency/"+c.Name, err)
			continue
		}
		row := bigRow{Config: c.Name, What: c.What, CertGenS: round1(gen.Seconds())}
		row.Proxy, row.Binary = e.proxyOf("haproxy")
		if b.want(ids[0]) {
			ds, err := b.bigCheckTimes(ctx, e, c)
			if err != nil {
				b.fail(ids[0], err)
			}
			row.Check = summarize(ds)
			b.logf("%s (%s): p50 %.1f p99 %.1f ms", ids[0], row.Proxy, row.Check.P50, row.Check.P99)
		}
		if b.want(ids[1]) {
			row.Native = b.bigLatency(ctx, ids[1], e, c, func(ports []int) Method {
				m := newHAProxyMW(e)
				m.render = func(v int) string { return c.render(ports, v) }
				return m
			})
		}
		if b.want(ids[2]) {
			row.Baton = b.bigLatency(ctx, ids[2], e, c, func(ports []int) Method {
				m := newBatonHAProxy(e)
				m.ports = ports
				m.render = func(v int) string { return c.render(ports, v) }
				return m
			})
		}
		if b.want(ids[3]) {
			row.API = b.bigLatency(ctx, ids[3], e, c, func(ports []int) Method {
				m := newBatonHAProxy(e)
				m.ports = ports
				m.render = func(v int) string { return c.render(ports, v) }
				return viaAPI(m)
			})
		}
		row.Ratio = ratio(row.Baton.Ack.P50, row.Native.Ack.P50)
		row.RatioAPI = ratio(row.API.Ack.P50, row.Native.Ack.P50)
		b.rep.Big = append(b.rep.Big, row)
	}
}

// bigLatency starts mk's method on fresh ports with config c, checks that
// it serves (and, with TLS, presents the last certificate for its SNI
// name), and times the plan's idle reloads.
func (b *bench) bigLatency(ctx context.Context, id string, e *env, c bigConfig, mk func(ports []int) Method) latencyRow {
	var row latencyRow
	ports, err := freePorts(2)
	if err != nil {
		b.fail(id, err)
		return row
	}
	if !c.tls() {
		ports = ports[:1]
	}
	m := mk(ports)
	b.runMethod(ctx, id, m, ports[0], func(m Method, port int) error {
		if c.tls() {
			if err := tlsProbe(ctx, addr(ports[1]), certName(c.Certs)); err != nil {
				return err
			}
		}
		row = b.reloadLatency(ctx, m, port, b.plan.BigReloads)
		row.ID = id
		row.Proxy, row.Binary = e.proxyOf("haproxy")
		if mw, ok := m.(*haproxyMW); ok {
			row.AckKind, row.AckReady = mw.ackKind(), mw.e.haproxyBin.syncReload()
		}
		b.logf("%s (%s): ack p50 %.1f p99 %.1f ms (baton's own %.1f); new version answers after p50 %.1f ms; %d errors %s",
			id, row.Proxy, row.Ack.P50, row.Ack.P99, row.Server.P50, row.Switch.P50, row.Errors, row.FirstError)
		return nil
	})
	return row
}

// bigCheckTimes times `haproxy -c -q` on config c.
func (b *bench) bigCheckTimes(ctx context.Context, e *env, c bigConfig) ([]time.Duration, error) {
	dir, err := e.dir("ref-" + c.Name)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	m := &haproxyMW{cfg: cfg, render: func(v int) string { return c.render(ports, v) }}
	if err := m.writeConfig(1); err != nil {
		return nil, err
	}
	return timeRuns(ctx, b.plan.BigReloads, func() error { return runQuiet(ctx, e.haproxy, "-c", "-q", "-f", cfg) })
}

// tlsProbe makes one TLS handshake with SNI name and checks that the
// certificate presented is name's.
func tlsProbe(ctx context.Context, a, name string) error {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{ServerName: name, InsecureSkipVerify: true}} // self-signed: only the name is checked
	c, err := d.DialContext(ctx, "tcp", a)
	if err != nil {
		return fmt.Errorf("TLS to %s (SNI %s): %w", a, name, err)
	}
	defer c.Close()
	certs := c.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 || certs[0].Subject.CommonName != name {
		return fmt.Errorf("TLS to %s (SNI %s): not that name's certificate", a, name)
	}
	return nil
}
