package jetstream_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// The cost of user values per payload, JSON against the msgpack earlier
// versions stored: go test -run XXX -bench Value -benchmem ./jetstream/

var benchPayloads = map[string][]byte{
	"order 180B": []byte(`{"orderId":"o-1001","sku":"book-42","qty":1,"amount":1250,"customer":{"id":12345678901234567890,"name":"Ann","vip":true},"lines":[{"sku":"a","n":2},{"sku":"b","n":1}]}`),
	"items 100k": func() []byte {
		var b strings.Builder
		b.WriteString(`{"items":[`)
		for i := range 100000 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(i))
		}
		b.WriteString("]}")
		return []byte(b.String())
	}(),
}

// BenchmarkValueDoor: what the dispatcher does with a trigger's payload
// before storing it. JSON: check it and store it as it is. msgpack (as
// before): decode the JSON and encode it as msgpack.
func BenchmarkValueDoor(b *testing.B) {
	for name, p := range benchPayloads {
		b.Run("json/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				if _, err := jetstream.CheckPayload(p, 1<<30); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("msgpack/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				v, err := workflow.DecodeJSON(p)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := jetstream.EncodeMessage(v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkValueRead: what an expression that reads the value costs the
// first time (later reads hit the decoded-value cache).
func BenchmarkValueRead(b *testing.B) {
	for name, p := range benchPayloads {
		v, err := workflow.DecodeJSON(p)
		if err != nil {
			b.Fatal(err)
		}
		old, err := jetstream.EncodeMessage(v)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("json/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				if _, err := jetstream.DecodeValue(p); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("msgpack/"+name, func(b *testing.B) { // as earlier versions read it
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				dec := msgpack.NewDecoder(bytes.NewReader(old))
				dec.UseLooseInterfaceDecoding(true)
				var v any
				if err := dec.Decode(&v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkValueWrite: encoding a small computed value (a bulk child's
// input, a step input).
func BenchmarkValueWrite(b *testing.B) {
	v := map[string]any{"id": "o-1001", "amount": int64(1250), "ok": true}
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			if _, err := jetstream.EncodeValue(v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("msgpack", func(b *testing.B) {
		for b.Loop() {
			if _, err := jetstream.EncodeMessage(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
