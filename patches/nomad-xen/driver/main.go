// Command nomad-driver-xen is the vimprof micro-VNF task driver plugin for Nomad (driver "xen").
// Nomad launches it from its plugin_dir; started with the argument "executor" it serves Nomad's
// executor instead (the stock variant re-executes this binary for that, like Nomad itself; the
// executor package's init handles it).
package main

import (
	"context"

	"vimprof.local/nomad-driver-xen/xen"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	xen.Serve(ctx)
}
