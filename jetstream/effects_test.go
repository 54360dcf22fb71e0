package jetstream_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// TestEffectKeyIsClaimedOnceAndRecordedOnce races claims on one effect key
// from several connections: one wins, the others see ErrExists; the
// outcome is written once, over the winning claim only.
func TestEffectKeyIsClaimedOnceAndRecordedOnce(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	ctx := context.Background()
	const key = "pay-abc/charge"
	clients := []*jetstream.Client{e.Client, e.NewClient(), e.NewClient(), e.NewClient()}
	type claim struct {
		rev   uint64
		err   error
		token string
	}
	res := make([]claim, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := string(rune('a' + i))
			rev, err := c.ClaimEffect(ctx, key, &jetstream.Effect{Instance: "pay-abc", Step: "charge", Attempt: 1, Delivery: uint64(i + 1), Token: tok, Claimed: time.Now()})
			res[i] = claim{rev, err, tok}
		}()
	}
	wg.Wait()
	var won *claim
	for i := range res {
		if res[i].err == nil {
			require.Nil(t, won, "two claims won")
			won = &res[i]
			continue
		}
		require.ErrorIs(t, res[i].err, workflow.ErrExists)
	}
	require.NotNil(t, won, "no claim won")

	rec, rev, err := e.Client.GetEffect(ctx, key)
	require.NoError(t, err)
	require.Equal(t, won.rev, rev)
	require.Equal(t, won.token, rec.Token)
	require.False(t, rec.Done)

	done := *rec
	done.Done, done.OutputRef, done.Ended = true, "pay-abc.charge.1.out", time.Now()
	_, err = e.Client.RecordEffect(ctx, key, &done, rev)
	require.NoError(t, err)
	again := done
	again.OutputRef = "somebody-else"
	_, err = e.Client.RecordEffect(ctx, key, &again, rev)
	require.ErrorIs(t, err, workflow.ErrConflict, "a second outcome over the same claim")

	hist, err := e.Client.EffectHistory(ctx, key)
	require.NoError(t, err)
	require.Len(t, hist, 2)
	require.False(t, hist[0].Done)
	require.True(t, hist[1].Done)
	require.Equal(t, "pay-abc.charge.1.out", hist[1].OutputRef)
	keys, err := e.Client.EffectKeys(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{key}, keys)

	_, _, err = e.Client.GetEffect(ctx, "pay-abc/other")
	require.ErrorIs(t, err, workflow.ErrNotFound)
}
