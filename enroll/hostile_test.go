package enroll

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Hostile input over HTTP: bodies far over the limit (declared, or
// streamed without a length and never ending), deeply nested JSON and
// forms, to every kind of portal endpoint. Each is a 4xx, fast, never a
// 500, and the portal reads at most maxBody bytes of it.
// TestMalformedFinish covers the register finish's malformed JSON; the
// slow-loris clients are agent's (TestSlowloris), where the server and its
// timeouts are built.

// endless is a body that never ends: what a client streams with chunked
// encoding to make the server read (and keep) without bound.
type endless struct {
	b    byte
	sent int64
}

func (r *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.b
	}
	r.sent += int64(len(p))
	return len(p), nil
}

// raw sends a request with the client's cookies and CSRF token and a body
// of the given reader; length -1 streams it chunked.
func (c *client) raw(method, path, contentType string, body io.Reader, length int64) (response, time.Duration) {
	c.t.Helper()
	if c.csrf == "" {
		c.get("/")
	}
	req, _ := http.NewRequest(method, c.base+path, body)
	req.ContentLength = length
	if length < 0 {
		req.ContentLength = -1
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set(csrfHeader, c.csrf)
	start := time.Now()
	res, err := c.http.Do(req)
	took := time.Since(start)
	if err != nil {
		// The server may answer and close before the client has sent
		// everything; Go's client then reports the write error. Retry
		// to read the answer is not possible: report the status as 0.
		return response{status: 0, body: err.Error()}, took
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return response{status: res.StatusCode, header: res.Header, body: string(b)}, took
}

func TestHostileBodies(t *testing.T) {
	e := newEnv(t, envOptions{})
	u := e.addUser("hostile", true)
	e.sync()
	c := e.client()
	c.mustSignIn(u.name, u.password)
	ceremony, _ := c.begin("/webauthn/register/begin", nil)
	lc, _ := newClient(t, e.URL).begin("/webauthn/login/begin", nil)

	big := strings.Repeat("A", 4<<20)
	nestedArrays := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	nestedObjects := strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000)
	jsonPaths := []string{"/webauthn/login/begin", "/webauthn/login/finish", "/webauthn/register/begin", "/webauthn/register/finish", "/webauthn/cancel"}
	for _, path := range jsonPaths {
		for _, tc := range []struct {
			name   string
			body   string
			status int
		}{
			{"oversized", `{"ceremony":"` + lc + `","credential":"` + big + `"}`, 413},
			{"oversized whitespace", `{"ceremony":"` + ceremony + `"` + strings.Repeat(" ", 1<<20) + `}`, 413},
			{"nested arrays", nestedArrays, 400},
			{"nested objects", nestedObjects, 400},
			{"nested in a field", `{"ceremony":"` + lc + `","credential":` + nestedArrays + `}`, 400},
			{"nested under the limit", `{"ceremony":"` + lc + `","credential":` + strings.Repeat(`[`, 9000) + strings.Repeat(`]`, 9000) + `}`, 400},
		} {
			r, took := c.raw(http.MethodPost, path, "application/json", strings.NewReader(tc.body), int64(len(tc.body)))
			if r.status != tc.status {
				t.Errorf("%s %s: status %d, want %d: %.300s", path, tc.name, r.status, tc.status, r.body)
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(r.body), &m); err != nil || m["error"] == "" || m["code"] == "" {
				t.Errorf("%s %s: no JSON error: %.300s", path, tc.name, r.body)
			}
			if took > 5*time.Second {
				t.Errorf("%s %s: took %s", path, tc.name, took)
			}
		}
		// A body that never ends, without a length.
		src := &endless{b: ' '}
		r, took := c.raw(http.MethodPost, path, "application/json", io.MultiReader(strings.NewReader(`{"ceremony":`), src), -1)
		if r.status != 0 && r.status != 413 || took > 10*time.Second {
			t.Errorf("%s endless: status %d after %s (%d bytes sent): %.300s", path, r.status, took, src.sent, r.body)
		}
	}
	if n := e.activePasskeys(u); n != 0 {
		t.Fatalf("%d passkeys stored from hostile bodies", n)
	}

	// Forms: the CSRF check reads them first, so an unbounded form would be
	// read before anything else is checked.
	forms := []string{"/signin/password", "/signout", "/recover/email", "/recover/code", "/recover/totp", "/link/" + strings.Repeat("A", 43),
		"/signin/admin-token", "/passkeys/1/rename", "/admin/users/1/links"}
	form := url.Values{csrfField: {c.csrf}, "username": {u.name}, "password": {big}}.Encode()
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	_ = mw.WriteField(csrfField, c.csrf)
	fw, _ := mw.CreateFormFile("upload", "big.bin")
	_, _ = fw.Write([]byte(big))
	mw.Close()
	mpHead := mp.Bytes()[:bytes.Index(mp.Bytes(), []byte(big[:64]))]
	for _, path := range forms {
		for _, tc := range []struct {
			name, ct string
			body     []byte
			head     string // the start of a body that then never ends
		}{
			{"urlencoded", "application/x-www-form-urlencoded", []byte(form), csrfField + "=" + c.csrf + "&username="},
			{"multipart", mw.FormDataContentType(), mp.Bytes(), string(mpHead)},
		} {
			r, took := c.raw(http.MethodPost, path, tc.ct, bytes.NewReader(tc.body), int64(len(tc.body)))
			if r.status != 413 || took > 5*time.Second {
				t.Errorf("%s %s: status %d after %s: %s", path, tc.name, r.status, took, strip(r.body))
			}
			// Streamed, no length: read up to the limit, then refused.
			src := &endless{b: 'a'}
			r, took = c.raw(http.MethodPost, path, tc.ct, io.MultiReader(strings.NewReader(tc.head), src), -1)
			if r.status != 0 && r.status != 413 || took > 10*time.Second {
				t.Errorf("%s %s endless: status %d after %s (%d bytes sent): %s", path, tc.name, r.status, took, src.sent, strip(r.body))
			}
		}
		// A broken form is a 400 with a page, not a 500.
		r, _ := c.raw(http.MethodPost, path, "multipart/form-data; boundary=x", strings.NewReader("--y\r\n\r\n"), 7)
		if r.status >= 500 {
			t.Errorf("%s broken multipart: %d %s", path, r.status, strip(r.body))
		}
		r, _ = c.raw(http.MethodPost, path, "application/x-www-form-urlencoded", strings.NewReader("a=%zz&"+csrfField+"="+c.csrf), -1)
		if r.status >= 500 {
			t.Errorf("%s broken urlencoded: %d %s", path, r.status, strip(r.body))
		}
	}
	// The user's session and the sign-in still work after all that.
	if r := c.get("/"); !strings.Contains(r.body, u.name) && !strings.Contains(r.body, displayName(u.name)) {
		t.Errorf("session lost: %s", strip(r.body))
	}
}

// TestHostileBodiesMemory: 32 bodies of 4 MiB to the sign-in form and the
// finish endpoint allocate far less than the 128 MiB they are: the portal
// stops reading at maxBody.
func TestHostileBodiesMemory(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client()
	c.get("/")
	const n, size = 32, 4 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		path, ct, prefix := "/signin/password", "application/x-www-form-urlencoded", csrfField+"="+c.csrf+"&username=x&password="
		if i%2 == 1 {
			path, ct, prefix = "/webauthn/login/finish", "application/json", `{"ceremony":"x","credential":"`
		}
		body := io.MultiReader(strings.NewReader(prefix), io.LimitReader(&endless{b: 'a'}, size))
		r, _ := c.raw(http.MethodPost, path, ct, body, int64(len(prefix))+size)
		if r.status != 413 && r.status != 0 {
			t.Fatalf("%s: status %d: %.300s", path, r.status, r.body)
		}
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 48<<20 {
		t.Fatalf("%d MiB allocated for %d MiB of refused bodies", alloc>>20, n*size>>20)
	} else {
		t.Logf("%d MiB allocated for %d MiB of refused bodies", alloc>>20, n*size>>20)
	}
}
