// Command test-credential-provider is a kubelet credential provider plugin (credentialprovider.kubelet.k8s.io
// v1, v1beta1, v1alpha1) written for registry-cache's tests, shaped like ecr-credential-provider:
//
//	echo '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"HOST/repo"}' |
//	  TOKEN_ENDPOINT=https://tokens.example/credentials TOKEN_CLIENT_ID=... TOKEN_CLIENT_SECRET=... test-credential-provider get-credentials
//
// It asks the token endpoint for a short-lived token with its long-lived identity (TOKEN_CLIENT_ID and
// TOKEN_CLIENT_SECRET as basic auth; TOKEN_CA_FILE: a PEM bundle to trust beside the system's) and answers with a
// CredentialProviderResponse of the same apiVersion: cacheKeyType Registry, the token as the password of the
// image's registry, and as cacheDuration half the time the token has left (what ecr-credential-provider
// answers). Errors go to stderr, without the identity or a token, and it exits 1.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	v1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
)

var apiVersions = map[string]bool{
	"credentialprovider.kubelet.k8s.io/v1":       true,
	"credentialprovider.kubelet.k8s.io/v1beta1":  true,
	"credentialprovider.kubelet.k8s.io/v1alpha1": true,
}

type token struct {
	Username  string  `json:"username"`
	Token     string  `json:"token"`
	ExpiresAt float64 `json:"expiresAt"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] != "get-credentials" {
		fail(fmt.Errorf("unknown command %q (only get-credentials)", os.Args[1]))
	}
	request, err := readRequest(os.Stdin)
	if err != nil {
		fail(err)
	}
	registry := strings.SplitN(request.Image, "/", 2)[0]
	got, err := fetch(registry)
	if err != nil {
		fail(err)
	}
	left := time.Until(time.Unix(0, int64(got.ExpiresAt*1e9)))
	if left <= 0 {
		fail(errors.New("the token endpoint handed out a token that has expired"))
	}
	response := v1.CredentialProviderResponse{
		TypeMeta:      metav1.TypeMeta{Kind: "CredentialProviderResponse", APIVersion: request.APIVersion},
		CacheKeyType:  v1.RegistryPluginCacheKeyType,
		CacheDuration: &metav1.Duration{Duration: (left / 2).Truncate(time.Second)},
		Auth:          map[string]v1.AuthConfig{registry: {Username: got.Username, Password: got.Token}},
	}
	out, err := json.Marshal(response)
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(append(out, '\n'))
}

func readRequest(r io.Reader) (*v1.CredentialProviderRequest, error) {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the request: %w", err)
	}
	var request v1.CredentialProviderRequest
	if err := json.Unmarshal(data, &request); err != nil {
		return nil, fmt.Errorf("the request is not JSON: %w", err)
	}
	if request.Kind != "CredentialProviderRequest" || !apiVersions[request.APIVersion] {
		return nil, fmt.Errorf("not a CredentialProviderRequest this plugin knows: kind %q, apiVersion %q",
			request.Kind, request.APIVersion)
	}
	if request.Image == "" {
		return nil, errors.New("the request names no image")
	}
	return &request, nil
}

func fetch(registry string) (*token, error) {
	endpoint := os.Getenv("TOKEN_ENDPOINT")
	id, secret := os.Getenv("TOKEN_CLIENT_ID"), os.Getenv("TOKEN_CLIENT_SECRET")
	if endpoint == "" || id == "" || secret == "" {
		return nil, errors.New("TOKEN_ENDPOINT, TOKEN_CLIENT_ID and TOKEN_CLIENT_SECRET must be set")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	if file := os.Getenv("TOKEN_CA_FILE"); file != "" {
		pem, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("TOKEN_CA_FILE: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("TOKEN_CA_FILE holds no PEM certificate")
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	body, _ := json.Marshal(map[string]string{"registry": registry})
	req, err := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("TOKEN_ENDPOINT: %w", err)
	}
	req.SetBasicAuth(id, secret)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "test-credential-provider")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("getting a token: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("getting a token: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("getting a token: %s answered %d", endpoint, resp.StatusCode)
	}
	var got token
	if err := json.Unmarshal(data, &got); err != nil || got.Token == "" || got.Username == "" {
		return nil, fmt.Errorf("getting a token: %s answered 200 without a token", endpoint)
	}
	return &got, nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "test-credential-provider: %v\n", err)
	os.Exit(1)
}
