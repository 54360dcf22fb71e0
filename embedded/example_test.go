package embedded_test

import (
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/jetflow/jetflow/embedded"
)

// Start a server on a store directory, serving in-process connections
// only, and connect to it without the network.
func Example() {
	dir, err := os.MkdirTemp("", "jetflow-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Config{StoreDir: dir, DontListen: true})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()

	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	fmt.Println(nc.IsConnected(), srv.ClientURL() == "")

	// A second server on the same store is refused while the first runs.
	_, err = embedded.Start(embedded.Config{StoreDir: dir, DontListen: true})
	fmt.Println(err != nil)
	// Output:
	// true true
	// true
}
