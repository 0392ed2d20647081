package main

import (
	"errors"
	"flag"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// durationValue is a duration flag's value whose error says what is wrong:
// the flag package's own says only "parse error".
type durationValue struct{ flag.Value }

func (v durationValue) Set(s string) error {
	if _, err := time.ParseDuration(s); err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return errors.New("missing unit in duration (use 5s, 2m, 1h30m)")
		}
		return errors.New("not a duration (use 5s, 2m, 1h30m)")
	}
	return v.Value.Set(s)
}

// explainDurations gives the duration flags registered under names a
// durationValue.
func explainDurations(set *flag.FlagSet, names []string) {
	for _, n := range names {
		if f := set.Lookup(n); f != nil {
			f.Value = durationValue{f.Value}
		}
	}
}

// durationFlag is a cli.DurationFlag with durationValue's errors.
type durationFlag struct{ *cli.DurationFlag }

func (f durationFlag) Apply(set *flag.FlagSet) error {
	if err := f.DurationFlag.Apply(set); err != nil {
		return err
	}
	explainDurations(set, f.Names())
	return nil
}

// altDurationFlag is the same for a flag --config may set.
type altDurationFlag struct{ *altsrc.DurationFlag }

func (f altDurationFlag) Apply(set *flag.FlagSet) error {
	if err := f.DurationFlag.Apply(set); err != nil {
		return err
	}
	explainDurations(set, f.Names())
	return nil
}

// newDurationFlag and newAltDurationFlag build them.
func newDurationFlag(f *cli.DurationFlag) cli.Flag { return durationFlag{f} }

func newAltDurationFlag(f *cli.DurationFlag) cli.Flag {
	return altDurationFlag{altsrc.NewDurationFlag(f)}
}
