package testsrv

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"testing"
)

func TestCAIssuesVerifiableServerCerts(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.Issue(dir, "server", "127.0.0.5", "dc1.corp.example")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(sc.KeyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
	pair, err := tls.LoadX509KeyPair(sc.CertFile, sc.KeyFile)
	if err != nil {
		t.Fatalf("load key pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}

	// The CA file on disk is what clients get as ca_file.
	caPEM, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s holds no certificate", ca.CertFile)
	}
	for _, host := range []string{"127.0.0.5", "dc1.corp.example"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.corp.example"}); err == nil {
		t.Error("certificate valid for a host it was not issued for")
	}
	var unknown x509.UnknownAuthorityError
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: UnrelatedCA(t).Pool, DNSName: "dc1.corp.example"}); !errors.As(err, &unknown) {
		t.Errorf("unrelated CA: want UnknownAuthorityError, got %v", err)
	}
	if b, _ := pem.Decode(caPEM); b == nil || b.Type != "CERTIFICATE" {
		t.Errorf("CA file is not a PEM certificate")
	}
	if ip := leaf.IPAddresses; len(ip) != 1 || !ip[0].Equal(net.ParseIP("127.0.0.5")) {
		t.Errorf("IP SANs %v", ip)
	}
	if _, err := ca.Issue(dir, "none"); err == nil {
		t.Error("a certificate without hosts was issued")
	}
}
