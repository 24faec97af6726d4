// Package cinit links hull-init, the container init of the guest, into
// the binary that imports it: a C constructor that takes over before the
// Go runtime starts when the binary is executed as "hull-init create" or
// "hull-init exec" (see init.c). Package ctr builds the plans it runs.
package cinit

// #cgo CFLAGS: -O2 -Wall -Werror
import "C"
