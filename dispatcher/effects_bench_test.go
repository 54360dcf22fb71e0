package dispatcher_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// BenchmarkOnceClaimRecord measures what a once step costs in claims and
// records (one op = one claim and one record of a fresh effect key):
// written by the worker itself (direct, without task tokens) or through
// a dispatcher's effect service (tokens: two request/reply round trips,
// each a token check and the KV write).
func BenchmarkOnceClaimRecord(b *testing.B) {
	for _, tokens := range []bool{false, true} {
		b.Run(map[bool]string{false: "direct", true: "service"}[tokens], func(b *testing.B) {
			e := jftest.Start(b, jetstream.Config{})
			dcfg, signer := onceTokens(b, tokens)
			dcfg.RepairInterval = -1
			e.Dispatcher(nil, dcfg)
			w := e.NewClient()
			ctx := context.Background()
			var seq atomic.Int64
			one := func() error {
				id := fmt.Sprintf("bench-%d", seq.Add(1))
				key := workflow.EffectKey(id, "charge")
				if signer == nil {
					claim := &jetstream.Effect{Instance: id, Step: "charge", Attempt: 1, Token: "n", Claimed: time.Now()}
					rev, err := w.ClaimEffect(ctx, key, claim)
					if err != nil {
						return err
					}
					rec := *claim
					rec.Done, rec.OutputRef = true, workflow.OutputKey(id, "charge", 1)
					_, err = w.RecordEffect(ctx, key, &rec, rev)
					return err
				}
				tok := signer.Sign(id, "charge", 1, time.Now())
				req := &jetstream.EffectRequest{Instance: id, Step: "charge", Attempt: 1, Token: tok, Nonce: "n"}
				r, err := w.RequestEffect(ctx, jetstream.EffectClaim, req)
				if err != nil {
					return err
				}
				if r.Status != jetstream.EffectClaimed {
					return fmt.Errorf("claim: %s", r.Status)
				}
				req.Revision, req.OutputRef = r.Revision, workflow.TokenOutputKey(id, "charge", 1, tok)
				r, err = w.RequestEffect(ctx, jetstream.EffectRecord, req)
				if err == nil && r.Status != jetstream.EffectRecorded {
					err = fmt.Errorf("record: %s", r.Status)
				}
				return err
			}
			// The service is up once it answers.
			jftest.Eventually(b, 20*time.Second, func() bool { return one() == nil }, "the effect service never answered")
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := one(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			require.False(b, b.Failed())
		})
	}
}
