package jetstream

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFireOfReplay: a fire with a message id is a fire only as a replay
// of a dead letter (replay/<seq>) that kept the server's fire time; it
// then reads as the fire it replays.
func TestFireOfReplay(t *testing.T) {
	t.Parallel()
	const next = "2030-01-02T03:04:05Z"
	at, _ := time.Parse(time.RFC3339, next)
	manual := "2030-01-02T03:04:05.123456789Z"
	mt, _ := time.Parse(time.RFC3339Nano, manual)
	base := map[string]string{HeaderScheduleCron: "@every 1m", HeaderScheduleZone: ""}
	with := func(kv ...string) func(string) string {
		h := map[string]string{}
		for k, v := range base {
			h[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return func(k string) string { return h[k] }
	}
	for _, tc := range []struct {
		name       string
		header     func(string) string
		next, man  time.Time
		wantErrSub string
	}{
		{"server fire", with(headerScheduleNext, next), at, time.Time{}, ""},
		{"replayed fire", with(HeaderMsgID, "replay/12", HeaderScheduleFireNext, next), at, time.Time{}, ""},
		{"replayed manual fire", with(HeaderMsgID, "replay/12", HeaderScheduleManual, manual), time.Time{}, mt, ""},
		{"client fire with a message id", with(HeaderMsgID, "mine", HeaderScheduleFireNext, next), time.Time{}, time.Time{}, "Nats-Msg-Id"},
		{"replay without the kept time", with(HeaderMsgID, "replay/12"), time.Time{}, time.Time{}, HeaderScheduleFireNext},
		{"client fire without a time", with(HeaderScheduleFireNext, next), time.Time{}, time.Time{}, headerScheduleNext},
		{"replay with a bad time", with(HeaderMsgID, "replay/12", HeaderScheduleFireNext, "soon"), time.Time{}, time.Time{}, HeaderScheduleFireNext},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, n, m, err := fireOf(tc.header)
			if tc.wantErrSub != "" {
				require.ErrorContains(t, err, tc.wantErrSub)
				return
			}
			require.NoError(t, err)
			require.True(t, tc.next.Equal(n), "next %s", n)
			require.True(t, tc.man.Equal(m), "manual %s", m)
		})
	}
}
