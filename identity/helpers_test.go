package identity

import (
	"os"
	"strconv"
	"testing"

	"github.com/passbridge/passbridge/internal/testdir"
	"github.com/passbridge/passbridge/internal/testsrv"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

// The real directories and databases the tests drive (internal/testdir,
// shared with the directory reader's and the sync engine's tests).
type slapdFixture = testdir.Slapd

var (
	baseConfig = testdir.BaseConfig
	database   = testdir.Database
	addAppUser = testdir.AddAppUser
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
