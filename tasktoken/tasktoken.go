// Package tasktoken signs task messages and checks the results that come
// back, so that only the worker that received a task attempt can report
// its result.
//
// Each task message carries a token, an HMAC-SHA256 of (instance, step,
// attempt) keyed by a secret the dispatchers share; the worker echoes it
// in its result and the dispatcher accepts a result only with a valid
// token. A NATS user allowed to publish results (the worker role) but
// holding no task of that attempt cannot make one.
//
// Keys live in a key file (Parse, KeySet.Marshal) that every dispatcher
// reads. A key file lists one or more keys; a result is accepted under any
// key that is not past its not-after, and tasks are signed with the newest
// key whose not-before has come. Rotation (Rotate) adds a new key that
// starts signing after a lead time (long enough for every dispatcher to
// read the new file) and retires the old one a grace period later (long
// enough for every task signed with it to come back). A Keyring re-reads
// its file when it changes, so rotation needs no restart.
package tasktoken

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrForged: a result's token is missing, malformed, signed with an
// unknown or retired key, or not the token of its (instance, step,
// attempt). The error's text says which.
var ErrForged = errors.New("forged result")

// ErrKeyFile: a key file cannot be read or parsed.
var ErrKeyFile = errors.New("task token key file")

const (
	// SecretSize is the size of a generated secret, and the least a key
	// file may hold: 32 bytes (256 bits).
	SecretSize = 32
	// maxKeys bounds the keys of one file.
	maxKeys = 16
	// macSize is how much of the HMAC a token carries: 128 bits.
	macSize = 16
	// idSize is the length of a key id in bytes (hex in the token).
	idSize = 4
	// domain separates these MACs from any other use of the secret.
	domain = "jetflow task token v1"
)

// Key is one secret of a key file.
type Key struct {
	// Secret is the HMAC key, at least SecretSize bytes.
	Secret []byte
	// NotBefore: the key signs tasks only from this time on (it is
	// accepted at once). Zero: always.
	NotBefore time.Time
	// NotAfter: results signed with this key are refused from this time
	// on. Zero: never.
	NotAfter time.Time
}

// ID is the key's id, carried in its tokens: the first bytes of the
// SHA-256 of the secret, in hex. It names the key without revealing it.
func (k Key) ID() string {
	h := sha256.Sum256(k.Secret)
	return hex.EncodeToString(h[:idSize])
}

// NewKey returns a key with a random secret.
func NewKey() (Key, error) {
	b := make([]byte, SecretSize)
	if _, err := rand.Read(b); err != nil {
		return Key{}, fmt.Errorf("generate task token key: %w", err)
	}
	return Key{Secret: b}, nil
}

// KeySet is the content of a key file.
type KeySet struct {
	Keys []Key
	// prep caches what signing and checking need per key (ids, HMAC
	// states); set by prepare, for the sets a Keyring holds.
	prep []prepared
}

type prepared struct {
	id   string
	macs *sync.Pool // of hash.Hash: HMAC-SHA256 keyed with the secret
}

// prepare returns s with its per-key cache filled.
func (s KeySet) prepare() KeySet {
	s.prep = make([]prepared, len(s.Keys))
	for i, k := range s.Keys {
		secret := k.Secret
		s.prep[i] = prepared{id: k.ID(), macs: &sync.Pool{New: func() any { return hmac.New(sha256.New, secret) }}}
	}
	return s
}

// id is the id of key i.
func (s KeySet) id(i int) string {
	if len(s.prep) == len(s.Keys) {
		return s.prep[i].id
	}
	return s.Keys[i].ID()
}

// mac is the token's MAC of (instance, step, attempt) under key i.
func (s KeySet) mac(i int, instance, step string, attempt int) []byte {
	var h hash.Hash
	if len(s.prep) == len(s.Keys) {
		h = s.prep[i].macs.Get().(hash.Hash)
		defer s.prep[i].macs.Put(h)
		h.Reset()
	} else {
		h = hmac.New(sha256.New, s.Keys[i].Secret)
	}
	var buf [binary.MaxVarintLen64]byte
	field := func(s string) {
		h.Write(buf[:binary.PutUvarint(buf[:], uint64(len(s)))])
		h.Write([]byte(s))
	}
	field(domain)
	field(instance)
	field(step)
	h.Write(buf[:binary.PutVarint(buf[:], int64(attempt))])
	var sum [sha256.Size]byte
	return h.Sum(sum[:0])[:macSize]
}

// Validate reports a set that cannot sign: no keys, too many, a short
// secret, two keys with one id, a not-after before its not-before, or no
// key without a not-after.
func (s KeySet) Validate() error {
	if len(s.Keys) == 0 {
		return fmt.Errorf("%w: no keys", ErrKeyFile)
	}
	if len(s.Keys) > maxKeys {
		return fmt.Errorf("%w: %d keys; at most %d", ErrKeyFile, len(s.Keys), maxKeys)
	}
	ids := map[string]bool{}
	open := false
	for i, k := range s.Keys {
		if len(k.Secret) < SecretSize {
			return fmt.Errorf("%w: key %d: secret of %d bytes; at least %d", ErrKeyFile, i+1, len(k.Secret), SecretSize)
		}
		if ids[k.ID()] {
			return fmt.Errorf("%w: key %d: the same secret twice", ErrKeyFile, i+1)
		}
		ids[k.ID()] = true
		if !k.NotAfter.IsZero() && !k.NotBefore.IsZero() && !k.NotAfter.After(k.NotBefore) {
			return fmt.Errorf("%w: key %d: not-after %s is not after not-before %s", ErrKeyFile, i+1, k.NotAfter.Format(time.RFC3339), k.NotBefore.Format(time.RFC3339))
		}
		open = open || k.NotAfter.IsZero()
	}
	if !open {
		return fmt.Errorf("%w: every key has a not-after; the newest key must have none", ErrKeyFile)
	}
	return nil
}

// signer is the key that signs at now: the one with the latest
// not-before that has come, among the keys not retired; when none (a
// file whose only open key starts later and whose others are retired),
// the one with the earliest not-before among the open keys.
func (s KeySet) signer(now time.Time) int {
	best := -1
	for i, k := range s.Keys {
		if k.NotBefore.After(now) || (!k.NotAfter.IsZero() && !now.Before(k.NotAfter)) {
			continue
		}
		if best < 0 || k.NotBefore.After(s.Keys[best].NotBefore) {
			best = i
		}
	}
	if best >= 0 {
		return best
	}
	for i, k := range s.Keys {
		if k.NotAfter.IsZero() && (best < 0 || k.NotBefore.Before(s.Keys[best].NotBefore)) {
			best = i
		}
	}
	return best
}

// Marshal writes the set in the key file format that Parse reads:
//
//	# comment
//	key <secret, base64url> [not-before <RFC 3339>] [not-after <RFC 3339>]
func (s KeySet) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString("# jetflow task token keys (jetflow security token-key; docs/security.md).\n")
	b.WriteString("# Secret: every dispatcher reads this same file (--task-token-key-file).\n")
	for _, k := range s.Keys {
		fmt.Fprintf(&b, "# key id %s\nkey %s", k.ID(), base64.RawURLEncoding.EncodeToString(k.Secret))
		if !k.NotBefore.IsZero() {
			fmt.Fprintf(&b, " not-before %s", k.NotBefore.UTC().Format(time.RFC3339))
		}
		if !k.NotAfter.IsZero() {
			fmt.Fprintf(&b, " not-after %s", k.NotAfter.UTC().Format(time.RFC3339))
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Parse reads a key file (see Marshal) and validates it.
func Parse(data []byte) (KeySet, error) {
	var s KeySet
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 1024), 64*1024)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if f[0] != "key" || len(f) < 2 || len(f)%2 != 0 {
			return KeySet{}, fmt.Errorf("%w: line %d: want `key <secret> [not-before <time>] [not-after <time>]`", ErrKeyFile, n)
		}
		secret, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(f[1], "="))
		if err != nil {
			return KeySet{}, fmt.Errorf("%w: line %d: secret is not base64url: %v", ErrKeyFile, n, err)
		}
		k := Key{Secret: secret}
		for i := 2; i < len(f); i += 2 {
			t, err := time.Parse(time.RFC3339, f[i+1])
			if err != nil {
				return KeySet{}, fmt.Errorf("%w: line %d: %s: %v", ErrKeyFile, n, f[i], err)
			}
			switch {
			case f[i] == "not-before" && k.NotBefore.IsZero():
				k.NotBefore = t
			case f[i] == "not-after" && k.NotAfter.IsZero():
				k.NotAfter = t
			default:
				return KeySet{}, fmt.Errorf("%w: line %d: unknown or repeated setting %q", ErrKeyFile, n, f[i])
			}
		}
		s.Keys = append(s.Keys, k)
		if len(s.Keys) > maxKeys {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return KeySet{}, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	if err := s.Validate(); err != nil {
		return KeySet{}, err
	}
	return s, nil
}

// Rotate returns s with a new key that signs from now+lead on, and every
// key without a not-after retired at now+lead+grace. Keys retired before
// now are dropped.
func Rotate(s KeySet, now time.Time, lead, grace time.Duration) (KeySet, error) {
	if lead < 0 || grace <= 0 {
		return KeySet{}, fmt.Errorf("rotate task token keys: lead must be >= 0 and grace > 0")
	}
	k, err := NewKey()
	if err != nil {
		return KeySet{}, err
	}
	now = now.UTC().Truncate(time.Second)
	var out KeySet
	for _, old := range s.Keys {
		switch {
		case old.NotAfter.IsZero():
			old.NotAfter = now.Add(lead + grace)
		case !old.NotAfter.After(now):
			continue
		}
		out.Keys = append(out.Keys, old)
	}
	k.NotBefore = now.Add(lead)
	out.Keys = append(out.Keys, k)
	return out, out.Validate()
}

// Sign returns the token of (instance, step, attempt) under the key set's
// signing key at now: "<key id>.<MAC, base64url>".
func (s KeySet) Sign(instance, step string, attempt int, now time.Time) string {
	i := s.signer(now)
	return s.id(i) + "." + base64.RawURLEncoding.EncodeToString(s.mac(i, instance, step, attempt))
}

// Verify checks that token is the token of (instance, step, attempt)
// under a key of the set not retired at now. Its errors match ErrForged.
func (s KeySet) Verify(instance, step string, attempt int, token string, now time.Time) error {
	if token == "" {
		return fmt.Errorf("%w: the result carries no task token", ErrForged)
	}
	id, sum, ok := strings.Cut(token, ".")
	got, err := base64.RawURLEncoding.DecodeString(sum)
	if !ok || err != nil || len(got) != macSize || len(id) != 2*idSize {
		return fmt.Errorf("%w: malformed task token", ErrForged)
	}
	for i, k := range s.Keys {
		if s.id(i) != id {
			continue
		}
		if !k.NotAfter.IsZero() && !now.Before(k.NotAfter) {
			return fmt.Errorf("%w: task token signed with key %s, retired at %s", ErrForged, id, k.NotAfter.UTC().Format(time.RFC3339))
		}
		if !hmac.Equal(got, s.mac(i, instance, step, attempt)) {
			return fmt.Errorf("%w: the task token is not that of instance %s step %s attempt %d", ErrForged, instance, step, attempt)
		}
		return nil
	}
	return fmt.Errorf("%w: task token signed with unknown key %s", ErrForged, id)
}

// ReloadInterval is how often a Keyring looks at its file for changes
// (on the clock passed to Sign and Verify).
const ReloadInterval = 5 * time.Second

// Keyring is a key set read from a file and read again when the file
// changes. It is safe for concurrent use.
type Keyring struct {
	path    string
	set     atomic.Pointer[KeySet]
	checked atomic.Int64 // unix nanos of the last look at the file
	mu      sync.Mutex   // one reload at a time
	stamp   fileStamp
	// OnReload, when set, is called after each attempt to read a changed
	// file: nil error when the new keys are in use, else why the old
	// ones stay. Set it before the first Sign or Verify.
	OnReload func(error)
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// Load reads a key file. Keep it readable by the dispatchers only (jetflow
// security token-key writes it with mode 0600): whoever holds a key can
// sign results.
func Load(path string) (*Keyring, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	s, err := readFile(path)
	if err != nil {
		return nil, err
	}
	k := &Keyring{path: path, stamp: fileStamp{st.ModTime(), st.Size()}}
	s = s.prepare()
	k.set.Store(&s)
	return k, nil
}

// Static returns a Keyring over a fixed set (no file).
func Static(s KeySet) (*Keyring, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	k := &Keyring{}
	s = s.prepare()
	k.set.Store(&s)
	return k, nil
}

func readFile(path string) (KeySet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return KeySet{}, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	s, err := Parse(b)
	if err != nil {
		return KeySet{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Keys returns the keys in use.
func (k *Keyring) Keys() KeySet { return *k.keys(time.Time{}) }

// keys returns the current set, reading the file again first when it
// was last looked at ReloadInterval before now and has changed since.
func (k *Keyring) keys(now time.Time) *KeySet {
	if k.path == "" || now.IsZero() {
		return k.set.Load()
	}
	last := k.checked.Load()
	if now.UnixNano()-last < int64(ReloadInterval) || !k.checked.CompareAndSwap(last, now.UnixNano()) {
		return k.set.Load()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	st, err := os.Stat(k.path)
	if err == nil && (fileStamp{st.ModTime(), st.Size()}) == k.stamp {
		return k.set.Load()
	}
	var s KeySet
	if err == nil {
		s, err = readFile(k.path)
	}
	if err == nil {
		s = s.prepare()
		k.set.Store(&s)
		k.stamp = fileStamp{st.ModTime(), st.Size()}
	}
	if k.OnReload != nil {
		k.OnReload(err)
	}
	return k.set.Load()
}

// Sign returns the token of (instance, step, attempt) at now.
func (k *Keyring) Sign(instance, step string, attempt int, now time.Time) string {
	return k.keys(now).Sign(instance, step, attempt, now)
}

// Verify checks a result's token at now (see KeySet.Verify).
func (k *Keyring) Verify(instance, step string, attempt int, token string, now time.Time) error {
	return k.keys(now).Verify(instance, step, attempt, token, now)
}
