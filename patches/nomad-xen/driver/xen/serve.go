package xen

import (
	"context"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/drivers"
	"github.com/hashicorp/nomad/plugins/drivers/proto"
	"google.golang.org/grpc"
)

const capabilitiesMethod = "/hashicorp.nomad.plugins.drivers.proto.Driver/Capabilities"

// Serve runs the driver as an external Nomad plugin, like plugins.Serve, with one fix: Nomad's
// gRPC driver server (plugins/drivers/server.go Capabilities, in v1.6.3 as in v1.11.3) never
// copies DisableLogCollection (nor MountConfigs) into the response although the client side
// (plugins/drivers/client.go) reads them, so an external driver cannot disable logmon. A unary
// interceptor fills them in from the driver's own Capabilities (TestSDKServerDropsDisableLogCollection
// tells when the SDK stops needing it).
func Serve(ctx context.Context) {
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, JSONFormat: true})
	d := NewDriver(ctx, logger)
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: base.Handshake,
		Plugins: map[string]plugin.Plugin{
			base.PluginTypeBase:   &base.PluginBase{Impl: d},
			base.PluginTypeDriver: drivers.NewDriverPlugin(d, logger),
		},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return plugin.DefaultGRPCServer(append(opts, grpc.ChainUnaryInterceptor(d.capabilitiesInterceptor)))
		},
		Logger: logger,
	})
}

func (d *Driver) capabilitiesInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err == nil && info.FullMethod == capabilitiesMethod {
		if r, ok := resp.(*proto.CapabilitiesResponse); ok && r.Capabilities != nil {
			caps, _ := d.Capabilities()
			fixCapabilities(r.Capabilities, caps)
		}
	}
	return resp, err
}

// fixCapabilities copies the fields Nomad's gRPC server drops into the proto response.
func fixCapabilities(pc *proto.DriverCapabilities, caps *drivers.Capabilities) {
	pc.DisableLogCollection = caps.DisableLogCollection
	pc.MountConfigs = proto.DriverCapabilities_MountConfigs(caps.MountConfigs)
}
