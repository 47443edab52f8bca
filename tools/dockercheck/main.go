// Command dockercheck validates the product's container files without a Docker engine:
//
//	dockercheck [Dockerfile...] docker-compose.yml
//
// (or a stack file of `docker stack deploy`, which loads it with compose-go as well). Each
// Dockerfile is parsed by BuildKit's own parser and instruction decoder (what `docker
// build` runs first); the compose file is loaded by compose-go, the reference implementation
// of the Compose specification (what `docker compose config` runs), with schema validation,
// interpolation and normalization, with the profiles COMPOSE_PROFILES names enabled. The
// normalized compose model is printed as JSON.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

func checkDockerfile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(os.Stderr, "%s: warning: %s\n", path, w.Short)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(stages) == 0 {
		return fmt.Errorf("%s: no build stage", path)
	}
	fmt.Fprintf(os.Stderr, "%s: %d stage(s), ok\n", path, len(stages))
	return nil
}

func checkCompose(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	opts, err := cli.NewProjectOptions([]string{abs}, cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithOsEnv, cli.WithDotEnv, cli.WithDefaultProfiles(), cli.WithName("autopilot-mysql"))
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	out, err := json.MarshalIndent(project, "", " ")
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	fmt.Fprintf(os.Stderr, "%s: %d service(s), ok\n", path, len(project.Services))
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dockercheck [DOCKERFILE...] COMPOSE_FILE")
		os.Exit(2)
	}
	last := len(os.Args) - 1
	for _, dockerfile := range os.Args[1:last] {
		if err := checkDockerfile(dockerfile); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := checkCompose(os.Args[last]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
