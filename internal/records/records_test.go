package records

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestJSONStringEscapes(t *testing.T) {
	assert.Equal(t, `"a\"b\\c\u0001é"`, string(AppendJSONString(nil, "a\"b\\c\x01é")))
	assert.Equal(t, `"Quote \"City\""`, string(AppendJSONString(nil, []byte(`Quote "City"`))))
}

func TestMaxLenBoundsEveryRecord(t *testing.T) {
	for i := range 1000 {
		name, email := AppendName(nil, i), AppendEmail(nil, i)
		b := AppendRecord(nil, ID(i), name, email, Score(i), Active(i), Cities[CityIndex(i)])
		assert.LessOrEqual(t, len(b), MaxLen(len(name)+len(email)), "record %d", i)
	}
}
