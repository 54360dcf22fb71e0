package dispatcher

import "github.com/jetflow/jetflow/jetstream"

// WithDroppedTriggerAcks returns cfg with a hook that withholds the ack of
// every trigger message for which drop returns true, once its starts were
// applied: what a dispatcher that dies between the commit and the ack
// leaves behind.
func WithDroppedTriggerAcks(cfg Config, drop func(*jetstream.Msg) bool) Config {
	cfg.dropTriggerAck = drop
	return cfg
}
