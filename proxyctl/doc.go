// Package proxyctl knows the proxy programs baton supervises: one Driver
// per program says how a generation is started with baton's listening
// sockets, how its configuration is checked, when it is ready, and which
// signal asks it to drain or to stop. It holds no policy: when a
// generation starts, becomes active or is signalled is the supervisor's
// decision, and the supervisor starts and reaps every process: a driver
// starts none itself, except `nginx -V` once in NewNginx (to learn nginx's
// compiled-in paths), before baton's reaper runs.
//
// # Drivers
//
//   - HAProxy (2.6+): a fresh master per generation, -W -db (or -Ws once
//     the binary is known to be 3.1+), -x on a per-generation _getsocks
//     socket that baton serves (fdpass) to this generation's master and
//     the workers it forked only, -dR so that a bind line matching no
//     passed socket fails instead of creating a second SO_REUSEPORT
//     socket, -S for a per-generation master CLI, and an extra -f file
//     adding a per-generation stats socket. Drain SIGUSR1, hard stop
//     SIGTERM. Never -sf/-st, never SIGTTOU.
//   - Nginx (1.22+): a fresh master per generation inheriting the sockets
//     as fds 3, 4, ... named in NGINX=3;4;, run from a staged copy of its
//     main config file with a pid file of its own. Drain SIGQUIT (to the
//     whole process group: GroupDrainer), hard stop SIGTERM.
//   - Generic: any server that speaks systemd socket activation
//     (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID set by the exec shim to the
//     child's own pid). Drain and hard-stop signals are configurable
//     (default SIGTERM and SIGINT).
//
// New picks a driver by name, or guesses it from the program's base name.
// Each driver refuses, with the reason, the command-line flags baton owns
// (HAProxy's -sf, -st, -x, -D, -W, -Ws, -S, -c; nginx's -s, -t, -T).
//
// # Sessions
//
// Prepare turns a GenSpec (generation number, private 0700 directory,
// borrowed listener descriptors, config copies, environment) into a Launch
// (argv, extra environment, descriptors to pass) and a Session: the
// driver-side state of that one generation, from Prepare until Close (the
// _getsocks server, the notify socket, probe state). Started tells it the
// leader's pid; Ready makes one readiness probe.
//
// # Readiness
//
// A generation is ready when its processes hold every listener it was
// given (the supervisor reads /proc) and its session's Ready returns nil;
// the supervisor polls both until then, or until --ready-timeout. Ready
// means:
//
//   - HAProxy: a worker forked by this generation's master answers
//     "show info" on the stats socket; before 3.1 the master CLI must also
//     list that worker ("show proc"), since a drain signal sent before the
//     master settled in wait mode is lost. Under -Ws the session is a
//     ReadyNotifier: the master's sd_notify READY=1 is awaited first (a
//     STATUS saying the load failed is not readiness) and the probe
//     confirms it.
//   - Nginx: a worker of the new master has every listener in its epoll
//     set (/proc/PID/fdinfo): it accepts on them.
//   - Generic: READY=1 on the generation's NOTIFY_SOCKET from the leader
//     or a process below it (a ReadyNotifier), or --ready-probe exiting 0, or, only when asked
//     for, the leader still alive --ready-after its start.
//
// # Checks
//
// CheckArgv is the proxy's own check command (haproxy -c, nginx -T, the
// generic driver's --check-command). Drivers whose start parses the whole
// configuration before serving implement StartChecks: under CheckAuto the
// supervisor then skips the command (one parse per reload), and for nginx
// reads the configuration itself (ConfigDump, the same format nginx -T
// prints). OutputChecker reads that dump to refuse what would break
// baton's guarantees (reuseport or a backlog= of its own on a passed
// address, a pid directive outside the main file, a QUIC listener with
// more than one worker). ListenerSource reads the addresses the
// configuration declares (TCP, unix, and the UDP of HTTP/3: HAProxy's
// quic4@/quic6@, nginx's listen ... quic), each with its file:line, so
// that baton binds them itself or checks that --listen covers them.
//
// # Optional interfaces
//
// The supervisor finds the optional behaviour by type assertion; each
// driver file states what it implements in compile-time guards:
//
//	          ProcessRoles ConfigSnapshotter ConfigStager OutputChecker StartChecks ListenerSource GroupDrainer
//	HAProxy   yes          yes               -            -             yes         yes            -
//	Nginx     yes          yes               yes          yes           yes         yes            yes
//	Generic   -            -                 -            -             -           -              -
//
// Sessions: HAProxy's is a ReadyNotifier (a nil channel unless it runs
// under -Ws); nginx's is a PidFiler (baton writes the serving master's pid
// into the pid file the user's config names); the generic driver's notify
// session is a ReadyNotifier.
//
// Dependencies: proxyctl imports fdpass and internal/proc (and
// x/sys/unix, prometheus/procfs), never the supervisor.
package proxyctl
