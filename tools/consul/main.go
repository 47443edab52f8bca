// Command consul is the Consul agent and CLI, built from the pinned module for the test bed
// and the demo. It only dispatches to Consul's registered sub-commands (agent, members, kv ...).
package main

import (
	"fmt"
	"io"
	"log"
	"os"

	"github.com/hashicorp/consul/command"
	consulcli "github.com/hashicorp/consul/command/cli"
	"github.com/hashicorp/consul/command/version"
	mcli "github.com/mitchellh/cli"
)

func main() {
	log.SetOutput(io.Discard) // the agent configures its own logger
	ui := &consulcli.BasicUI{BasicUi: mcli.BasicUi{Writer: os.Stdout, ErrorWriter: os.Stderr}}
	runner := &mcli.CLI{
		Name:        "consul",
		Args:        os.Args[1:],
		Commands:    command.RegisteredCommands(ui),
		HelpFunc:    mcli.BasicHelpFunc("consul"),
		HelpWriter:  os.Stdout,
		ErrorWriter: os.Stderr,
	}
	if runner.IsVersion() {
		os.Exit(version.New(ui).Run(nil))
	}
	code, err := runner.Run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "consul: %v\n", err)
		code = 1
	}
	os.Exit(code)
}
