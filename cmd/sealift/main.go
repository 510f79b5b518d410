// Command sealift is the A/B OS updater: one binary with subcommands. Flag
// parsing and logging are set up here and nowhere else; the packages below
// return errors and stay quiet.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
)

// Exit codes, documented in docs/cli.md.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitBadInput = 3
	exitVerify   = 4
	exitLocked   = 5
	exitNothing  = 6
)

type command struct {
	name    string // "disk init"
	summary string
	// run parses its own flags from args.
	run func(g *globals, args []string) error
}

var commands []command

func register(c command) { commands = append(commands, c) }

// usageError marks errors that are the caller's command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	// SEALIFT_CPUPROFILE=FILE writes a CPU profile of the command, for
	// the performance work in docs/benchmarks.md.
	if p := os.Getenv("SEALIFT_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				code := run(os.Args[1:], os.Stdout, os.Stderr)
				pprof.StopCPUProfile()
				f.Close()
				os.Exit(code)
			}
		}
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	log := logrus.New()
	log.SetOutput(stderr)
	g.log = log

	// The command is the longest registered name the arguments start with.
	var cmd *command
	var rest []string
	for i := range commands {
		words := strings.Fields(commands[i].name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == commands[i].name {
			if cmd == nil || len(words) > len(strings.Fields(cmd.name)) {
				cmd, rest = &commands[i], args[len(words):]
			}
		}
	}
	if cmd == nil {
		if len(args) == 0 || args[0] == "help" || args[0] == "--help" || args[0] == "-h" {
			printUsage(stdout)
			return exitOK
		}
		if args[0] == "--version" || args[0] == "version" {
			fmt.Fprintln(stdout, "sealift", version)
			return exitOK
		}
		fmt.Fprintf(stderr, "sealift: unknown command %q\n\n", strings.Join(args, " "))
		printUsage(stderr)
		return exitUsage
	}
	err := cmd.run(g, rest)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, pflag.ErrHelp) {
		return exitOK
	}
	code := exitCode(err)
	log.WithField("command", cmd.name).Error(err.Error())
	return code
}

var version = "dev"

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "sealift: atomic A/B OS updates with dm-verity and automatic rollback")
	fmt.Fprintln(w, "\nUsage: sealift COMMAND [flags]   (sealift COMMAND --help for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	cs := append([]command(nil), commands...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-16s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nExit codes: 0 ok, 1 error, 2 usage, 3 invalid input, 4 verification failed,")
	fmt.Fprintln(w, "            5 disk locked by another sealift, 6 nothing to do")
}
