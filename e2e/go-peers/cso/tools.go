//go:build tools

// Package tools pins the cluster-stack-operator's main package, so `go mod tidy` keeps what building it needs.
package tools

import _ "github.com/SovereignCloudStack/cluster-stack-operator/cmd"
