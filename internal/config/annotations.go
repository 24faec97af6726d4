package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// AnnotationPrefix starts the annotations that override configuration
// values for one sandbox (pod), e.g. io.hull.config.hypervisor.vcpus.
const AnnotationPrefix = "io.hull.config."

// annotatable are the keys an annotation may set, each with how to apply
// and check its value. Only keys the operator lists in
// hypervisor.enable_annotations are accepted.
var annotatable = map[string]func(c *Config, v string) error{
	"hypervisor.vcpus": func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		c.Hypervisor.VCPUs = n
		return nil
	},
	"hypervisor.memory_mib": func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		c.Hypervisor.MemoryMiB = n
		return nil
	},
	"hypervisor.kernel_params": func(c *Config, v string) error {
		c.Hypervisor.KernelParams = strings.TrimSpace(c.Hypervisor.KernelParams + " " + v)
		return nil
	},
	"hypervisor.boot_timeout": func(c *Config, v string) error {
		return c.Hypervisor.BootTimeout.UnmarshalText([]byte(v))
	},
}

// WithAnnotations returns a copy of c with the io.hull.config.* annotations
// applied. An annotation for a key that is unknown or not enabled in
// hypervisor.enable_annotations, or with a bad value, is an error, and so is
// a result that fails validation.
func (c *Config) WithAnnotations(annotations map[string]string) (*Config, error) {
	var keys []string
	for k := range annotations {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return c, nil
	}
	sort.Strings(keys)
	out := *c
	for _, k := range keys {
		key := strings.TrimPrefix(k, AnnotationPrefix)
		apply, known := annotatable[key]
		if !known {
			return nil, fmt.Errorf("annotation %s: unknown configuration key", k)
		}
		if !c.annotationEnabled(key) {
			return nil, fmt.Errorf("annotation %s: not enabled (list %q in hypervisor.enable_annotations)", k, key)
		}
		if err := apply(&out, annotations[k]); err != nil {
			return nil, fmt.Errorf("annotation %s: invalid value %q: %w", k, annotations[k], err)
		}
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("annotations: %w", err)
	}
	return &out, nil
}

func (c *Config) annotationEnabled(key string) bool {
	for _, e := range c.Hypervisor.EnableAnnotations {
		if e == key || "hypervisor."+e == key {
			return true
		}
	}
	return false
}
