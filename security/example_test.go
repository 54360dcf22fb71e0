package security_test

import (
	"fmt"

	"github.com/jetflow/jetflow/security"
)

// Each role connects with its own reply-subject prefix, so NATS
// permissions keep a role from reading another's replies.
func ExampleParseRole() {
	for _, name := range []string{"worker", "producer", "root"} {
		r, err := security.ParseRole(name)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(r, r.InboxPrefix())
	}
	// Output:
	// worker _INBOX_jetflow_worker
	// producer _INBOX_jetflow_producer
	// unknown role "root" (use admin, dispatcher, worker, producer, operator)
}
