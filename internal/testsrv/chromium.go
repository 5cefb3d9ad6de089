package testsrv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// Headless Chromium for end-to-end tests of the portal's WebAuthn flows.
//
// One browser process serves a whole test package: it starts on the first
// call of Browser and stops in Run. Every Browser call opens a tab in a
// browser context of its own (like an incognito window: no cookies, storage
// or credentials shared with other tests), closed when the test ends.
//
// WebAuthn needs a secure context and an RP ID that is a domain, so a test
// serves its pages on 127.0.0.1 (httptest does) but opens them as
// http://localhost:PORT (see Localhost): Chromium treats localhost as secure
// and accepts "localhost" as an RP ID, while an IP address is no valid RP ID.

// chromiumStartTimeout bounds the start of the browser. chromedp binds the
// browser's life to the context of the first Run, so that context cannot
// carry a deadline; the start is bounded from outside instead.
const chromiumStartTimeout = 90 * time.Second

var chromium struct {
	mu      sync.Mutex
	started bool
	ctx     context.Context // the browser's chromedp context
	err     error           // a start error, reported to every later caller
}

// chromiumFlags keep the browser off the network (the test machine has no
// internet and must not try) and quiet, on top of chromedp's defaults, which
// already disable extensions, sync, background networking, the first-run UI
// and /dev/shm. The user data directory is a fresh temporary directory that
// chromedp creates and removes.
func chromiumFlags(path string) []chromedp.ExecAllocatorOption {
	opts := append([]chromedp.ExecAllocatorOption{}, chromedp.DefaultExecAllocatorOptions[:]...)
	opts = append(opts,
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("no-default-browser-check", true),
		// Resolve no name but localhost: a test that reaches for any other
		// host fails at once instead of waiting on DNS.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE localhost"),
		chromedp.WindowSize(1280, 900),
	)
	if os.Geteuid() == 0 {
		// Chromium refuses to run as root with its sandbox.
		opts = append(opts, chromedp.NoSandbox)
	}
	return opts
}

// startChromium starts the package's browser once; later callers get the
// same browser, or the same start error.
func startChromium(path string) (context.Context, error) {
	chromium.mu.Lock()
	defer chromium.mu.Unlock()
	if chromium.started {
		return chromium.ctx, chromium.err
	}
	chromium.started = true

	var output tailWriter
	opts := append(chromiumFlags(path), chromedp.CombinedOutput(&output))
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), opts...)
	browserCtx, browserCancel := chromedp.NewContext(allocCtx)
	stop := func() {
		// Close gracefully (Chromium flushes its profile), then make sure.
		ctx, cancel := context.WithTimeout(browserCtx, 15*time.Second)
		_ = chromedp.Cancel(ctx)
		cancel()
		browserCancel()
		allocCancel()
	}

	started := make(chan error, 1)
	go func() { started <- chromedp.Do(browserCtx) }()
	var err error
	select {
	case err = <-started:
	case <-time.After(chromiumStartTimeout):
		err = fmt.Errorf("no answer within %s", chromiumStartTimeout)
	}
	if err != nil {
		browserCancel()
		allocCancel()
		chromium.err = fmt.Errorf("start %s: %w\nbrowser output:\n%s", path, err, output.String())
		return nil, chromium.err
	}
	onStop(stop)
	chromium.ctx = browserCtx
	return browserCtx, nil
}

// Browser returns a chromedp context for a fresh tab in a fresh browser
// context of the package's headless Chromium; the tab and its browser context
// are closed when the test ends. Use it with chromedp.Do, chromedp.Run and
// chromedp.Call. Without Chromium installed the test is skipped (Debian
// package chromium), or fails under make test.
func Browser(tb testing.TB) context.Context {
	tb.Helper()
	path := Binary(tb, "chromium", "chromium")
	browserCtx, err := startChromium(path)
	if err != nil {
		tb.Fatalf("chromium: %v", err)
	}
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	// Open the tab now, so that a failure shows here and not in the
	// test's first action.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		tb.Fatalf("chromium: open a tab: %v", err)
	}
	tb.Cleanup(cancel)
	return ctx
}

// VirtualAuthenticator adds a CDP virtual authenticator to the tab of ctx:
// a platform authenticator (CTAP 2.1, transport internal) with resident keys
// and user verification that always succeeds, and that simulates the user's
// touch, so navigator.credentials.create and get complete without a prompt.
// It returns the authenticator's ID for further webauthn commands, such as
// webauthn.GetCredentials.
func VirtualAuthenticator(tb testing.TB, ctx context.Context) webauthn.AuthenticatorID {
	tb.Helper()
	return VirtualAuthenticatorWith(tb, ctx, nil)
}

// VirtualAuthenticatorWith is VirtualAuthenticator with its options changed
// by edit first: for example DefaultBackupEligibility and
// DefaultBackupState for a provider of synced passkeys. The WebAuthn domain
// is enabled once per tab; adding a second authenticator to a tab is fine.
func VirtualAuthenticatorWith(tb testing.TB, ctx context.Context, edit func(*webauthn.VirtualAuthenticatorOptions)) webauthn.AuthenticatorID {
	tb.Helper()
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		tb.Fatalf("chromium: enable WebAuthn: %v", err)
	}
	opts := &webauthn.VirtualAuthenticatorOptions{
		Protocol:                    webauthn.AuthenticatorProtocolCtap2,
		Ctap2version:                webauthn.Ctap2versionCtap21,
		Transport:                   webauthn.AuthenticatorTransportInternal,
		HasResidentKey:              true,
		HasUserVerification:         true,
		IsUserVerified:              true,
		AutomaticPresenceSimulation: true,
	}
	if edit != nil {
		edit(opts)
	}
	res, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: opts})
	if err != nil {
		tb.Fatalf("chromium: add a virtual authenticator: %v", err)
	}
	return res.AuthenticatorID
}

// Screenshot writes a PNG of the whole page of the tab of ctx to path, for
// looking at what an end-to-end test saw.
func Screenshot(tb testing.TB, ctx context.Context, path string) {
	tb.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 is PNG
	if err != nil {
		tb.Fatalf("chromium: screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.Fatalf("chromium: write screenshot: %v", err)
	}
}

// Localhost rewrites a URL on 127.0.0.1 (as httptest.Server.URL is) to the
// same port on localhost, the origin under which WebAuthn works.
func Localhost(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Hostname() != "127.0.0.1" {
		return rawURL
	}
	u.Host = "localhost:" + u.Port()
	if u.Port() == "" {
		u.Host = "localhost"
	}
	return u.String()
}

// tailWriter keeps the last bytes of the browser's output for error
// messages.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 8 << 10

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > tailMax {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-tailMax:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
