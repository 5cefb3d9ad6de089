package appsignin_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/passbridge/passbridge/internal/testsrv"
)

// TestDemoERP is the newcomer's story in one command: `passbridge run`
// with no configuration starts the demo, whose ERP (on the port after the
// portal's) signs in through passbridge; an employee adds a passkey on the
// portal, signs in to the ERP with it, and signs out again (RP-initiated
// logout back to the ERP). It logs how long it took from the start of the
// binary to the signed-in ERP page.
func TestDemoERP(t *testing.T) {
	bin := testsrv.Passbridge(t)
	dir := t.TempDir()
	// A free port whose next one (the ERP's) is free too.
	var port int
	for {
		port = testsrv.FreePort(t)
		if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1)); err == nil {
			ln.Close()
			break
		}
	}
	portal := "http://localhost:" + strconv.Itoa(port)
	erp := "http://localhost:" + strconv.Itoa(port+1)
	var out testsrv.Buffer
	started := time.Now()
	cmd := exec.Command(bin, "run", "--listen", "127.0.0.1:"+strconv.Itoa(port), "--demo-dir", dir)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("passbridge run (demo):\n%s", out.String())
		}
	})
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(out.String(), "Demo ERP"); {
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not announce its ERP:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out.String(), erp) {
		t.Errorf("the banner does not give the ERP's address %s:\n%s", erp, out.String())
	}

	ctx := testsrv.Browser(t)
	testsrv.VirtualAuthenticator(t, ctx)
	run := browserRun(t, ctx)
	run("add a passkey on the demo portal",
		chromedp.Navigate(portal+"/"),
		passwordForm("username", "zoe.orsted", "northwind"),
		chromedp.WaitVisible(chromedp.ID("register")),
		chromedp.Click(chromedp.ID("register")),
		chromedp.WaitVisible(chromedp.Search(`//div[contains(@class,"notice") and contains(., "Your passkey is ready")]`)),
	)
	run("sign in to the demo ERP",
		chromedp.Navigate(erp+"/"),
		chromedp.WaitVisible(chromedp.ID("signin")),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("passkey-signin")),
		chromedp.Click(chromedp.ID("passkey-signin")),
	)
	welcome := waitText(t, ctx, "welcome")
	t.Logf("from the start of passbridge run to the signed-in demo ERP page: %s", time.Since(started).Round(time.Millisecond))
	if !strings.Contains(welcome, "Zoë Ørsted") {
		t.Errorf("the ERP's welcome: %q", welcome)
	}
	run("sign out of the demo ERP", chromedp.Click(chromedp.CSS(`form[action="/logout"] button`)))
	waitText(t, ctx, "signin")
}

// passwordForm waits for ready, fills the password form (the portal's
// or the OpenID Connect login page's) with user and password, and submits
// it.
func passwordForm(ready, user, password string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.WaitVisible(chromedp.ID(ready)),
		chromedp.SetValue(chromedp.ID("username"), user),
		chromedp.SetValue(chromedp.ID("password"), password),
		chromedp.Click(chromedp.CSS(`#password-form button[type=submit]`)),
	)
}

// browserRun returns a runner of chromedp actions in the tab of ctx, with
// a deadline, that fails the test with the page's text.
func browserRun(t *testing.T, ctx context.Context) func(what string, actions ...chromedp.Action[chromedp.Void]) {
	return func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(c, actions...); err != nil {
			tc, tcancel := context.WithTimeout(ctx, 5*time.Second)
			defer tcancel()
			body, _ := chromedp.Run(tc, chromedp.Text(chromedp.CSS("body")))
			t.Fatalf("%s: %v\npage: %s", what, err, body)
		}
	}
}

// waitText waits for the element with id to be in the tab's page, across
// navigations (a query made while the tab navigates fails and is asked
// again), and returns its text.
func waitText(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		text, _ := chromedp.Run(c, chromedp.Evaluate[string](`(function(){var e=document.getElementById(`+strconv.Quote(id)+`);return e?(e.textContent||e.id):"";})()`))
		cancel()
		if text != "" {
			return text
		}
		if time.Now().After(deadline) {
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			body, _ := chromedp.Run(c, chromedp.Text(chromedp.CSS("body")))
			cancel()
			t.Fatalf("no #%s on the page: %s", id, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
