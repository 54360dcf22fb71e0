package jetstream

import (
	"container/list"
	"sync"
)

// lru caches decoded write-once values, bounded by their encoded size.
// Write-once keys never change, so a cached value is never stale.
type lru struct {
	mu    sync.Mutex
	max   int
	size  int
	ll    *list.List
	items map[string]*list.Element
}

type lruEntry struct {
	key  string
	raw  []byte // encoded value
	val  any    // decoded value, when known
	size int
}

func newLRU(maxBytes int) *lru {
	return &lru{max: maxBytes, ll: list.New(), items: map[string]*list.Element{}}
}

// get returns the entry's encoded value and, when known, decoded value.
func (c *lru) get(key string) (raw []byte, val any, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.ll.MoveToFront(e)
		ent := e.Value.(*lruEntry)
		return ent.raw, ent.val, true
	}
	return nil, nil, false
}

// put caches a value; val may be nil when only the encoding is at hand.
func (c *lru) put(key string, raw []byte, val any) {
	size := 2*len(raw) + len(key) + 64
	if size > c.max/4 {
		return // too large to be worth caching
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		if val != nil {
			e.Value.(*lruEntry).val = val
		}
		return
	}
	c.items[key] = c.ll.PushFront(&lruEntry{key: key, raw: raw, val: val, size: size})
	c.size += size
	for c.size > c.max && c.ll.Len() > 0 {
		e := c.ll.Back()
		ent := e.Value.(*lruEntry)
		c.ll.Remove(e)
		delete(c.items, ent.key)
		c.size -= ent.size
	}
}
