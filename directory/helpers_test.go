package directory

import (
	"os"
	"testing"

	"github.com/passbridge/passbridge/internal/testdir"
	"github.com/passbridge/passbridge/internal/testsrv"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

// The real directories and databases the tests drive (internal/testdir,
// shared with the sync engine's and the identity layer's tests).
type fixture = testdir.Fixture

var (
	fixtures   = testdir.Fixtures
	baseConfig = testdir.BaseConfig
	database   = testdir.Database
)
