// Package agent holds the agent API that the host runtime and the guest agent
// share: the protobuf messages and the ttrpc service of agent.proto. It is the
// only code the host and guest trees have in common.
package agent

//go:generate protoc -I. -I/usr/include --go_out=. --go_opt=paths=source_relative --go-ttrpc_out=. --go-ttrpc_opt=paths=source_relative agent.proto

// APIVersion is bumped when the service gains RPCs a host may depend on.
const APIVersion = 9
