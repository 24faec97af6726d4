package main

import (
	"fmt"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"github.com/urfave/cli/v2"

	agent "github.com/hullrt/hull/api/agent/v1"
)

var featuresCommand = &cli.Command{
	Name:  "features",
	Usage: "print what this runtime supports, as runtime-spec features JSON",
	Action: func(c *cli.Context) error {
		yes := true
		f := features.Features{
			OCIVersionMin: "1.0.0",
			OCIVersionMax: specs.Version,
			Hooks:         []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"},
			MountOptions:  specconv.KnownMountOptions(),
			Linux: &features.Linux{
				Namespaces:   specconv.KnownNamespaces(),
				Capabilities: nil,
				Cgroup:       &features.Cgroup{V2: &yes},
			},
			Annotations: map[string]string{
				"io.github.hullrt.hull.version":           version,
				"io.github.hullrt.hull.agent.api_version": fmt.Sprint(agent.APIVersion),
				"io.github.hullrt.hull.isolation":         "vm",
			},
		}
		return printJSON(f)
	},
}

var versionCommand = &cli.Command{
	Name:  "version",
	Usage: "print the version",
	Action: func(c *cli.Context) error {
		fmt.Printf("hull version %s\nspec: %s\nagent api: %d\n", version, specs.Version, agent.APIVersion)
		return nil
	},
}
