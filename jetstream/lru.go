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
	val  any
	size int
}

func newLRU(maxBytes int) *lru {
	return &lru{max: maxBytes, ll: list.New(), items: map[string]*list.Element{}}
}

func (c *lru) get(key string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*lruEntry).val, true
	}
	return nil, false
}

func (c *lru) put(key string, val any, size int) {
	if size > c.max/4 {
		return // too large to be worth caching
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[key]; ok {
		return
	}
	c.items[key] = c.ll.PushFront(&lruEntry{key: key, val: val, size: size + len(key) + 64})
	c.size += size + len(key) + 64
	for c.size > c.max && c.ll.Len() > 0 {
		e := c.ll.Back()
		ent := e.Value.(*lruEntry)
		c.ll.Remove(e)
		delete(c.items, ent.key)
		c.size -= ent.size
	}
}
