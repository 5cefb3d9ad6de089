package appsignin

import (
	"os"
	"testing"

	"github.com/passbridge/passbridge/internal/testsrv"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }
