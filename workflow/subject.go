package workflow

import "strings"

// SubjectMatches reports whether subject matches a NATS subject pattern
// with '*' (one token) and '>' (one or more trailing tokens) wildcards.
func SubjectMatches(pattern, subject string) bool {
	pt := strings.Split(pattern, ".")
	st := strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || (p != "*" && p != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}
