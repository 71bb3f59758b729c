package xen

import (
	"context"
	"testing"

	"github.com/hashicorp/nomad/helper/testlog"
	"github.com/hashicorp/nomad/plugins/drivers"
	dtestutil "github.com/hashicorp/nomad/plugins/drivers/testutils"
	"github.com/shoenig/test/must"
)

// TestSDKServerDropsDisableLogCollection is why Serve keeps its interceptor: the SDK's own gRPC
// server (drivers.NewDriverPlugin, what the harness and plugins.Serve use) drops
// DisableLogCollection in Nomad v1.6.3 as in v1.11.3. If this fails, the SDK passes it now and
// the interceptor can go.
func TestSDKServerDropsDisableLogCollection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	d := NewDriver(ctx, testlog.HCLogger(t))
	d.mu.Lock()
	d.caps = capabilitiesFor(VariantTuned)
	d.mu.Unlock()
	h := dtestutil.NewDriverHarness(t, d) // no h.Kill(): see newHarness
	caps, err := h.Capabilities()
	must.NoError(t, err)
	must.Eq(t, drivers.FSIsolationNone, caps.FSIsolation)
	must.False(t, caps.DisableLogCollection)
}
