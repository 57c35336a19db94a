// Command gardener-parity runs the validation code of github.com/gardener/gardener-extension-registry-cache
// on inputs read as JSON lines from stdin and writes one JSON line per input to stdout.
//
// Requests:
//
//	{"op":"config","config":{...},"old":{...}|null}
//	    decode config (and old) as the shoot admission webhook does (strict UniversalDecoder of the
//	    extension's scheme, runtime.DecodeInto the internal type), then ValidateRegistryConfigUpdate(old, new)
//	    when old is given, followed by ValidateRegistryConfig(new).
//	    -> {"decodeError": "..."} or {"errors": [...], "decoded": <v1alpha3 JSON of new>, "unchanged": bool}
//	{"op":"secret","secret":{"immutable":bool|null,"data":{"key":"<base64>"}},"name":"ref-name"}
//	    -> {"errors": [...]} from ValidateUpstreamRegistrySecret on Secret garden-dev/creds
//	{"op":"names","upstream":"...","suffix":"..."|absent}
//	    -> {"labelValue","resourceName","upstreamURL","serviceName"}
//	{"op":"upstream","upstream":"..."} / {"op":"url","url":"..."}
//	    -> {"errors": [...]} from ValidateUpstream / ValidateURL(..., allowPath=false)
//
// Each error is {"type","field","badValue","badValueJSON","detail","error"}. A request that cannot be
// handled yields {"fatal": "..."}; the process itself only exits at the end of its input.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/gardener/gardener-extension-registry-cache/pkg/apis/registry"
	"github.com/gardener/gardener-extension-registry-cache/pkg/apis/registry/install"
	"github.com/gardener/gardener-extension-registry-cache/pkg/apis/registry/v1alpha3"
	"github.com/gardener/gardener-extension-registry-cache/pkg/apis/registry/validation"
	registryutils "github.com/gardener/gardener-extension-registry-cache/pkg/utils/registry"
)

type request struct {
	Op       string          `json:"op"`
	Config   json.RawMessage `json:"config"`
	Old      json.RawMessage `json:"old"`
	Secret   *secretInput    `json:"secret"`
	Name     string          `json:"name"`
	Upstream string          `json:"upstream"`
	Suffix   *string         `json:"suffix"`
	URL      string          `json:"url"`
}

type secretInput struct {
	Immutable *bool             `json:"immutable"`
	Data      map[string][]byte `json:"data"`
}

type fieldError struct {
	Type     string `json:"type"`
	Field    string `json:"field"`
	BadValue string `json:"badValue"`
	// BadValueJSON is json.Marshal(BadValue) (pointers followed, "" when it cannot be marshalled): %v prints
	// the address of a *string such as the one ValidateImmutableField reports.
	BadValueJSON string `json:"badValueJSON"`
	Detail       string `json:"detail"`
	Error        string `json:"error"`
}

var (
	scheme  = runtime.NewScheme()
	decoder runtime.Decoder

	providerConfigPath = field.NewPath("spec", "extensions").Index(0).Child("providerConfig")
	secretRefPath      = providerConfigPath.Child("caches").Index(0).Child("secretReferenceName")
)

func init() {
	install.Install(scheme)
	// As pkg/admission/validator/cache/webhook.go builds it.
	decoder = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDecoder()
}

func convertErrors(list field.ErrorList) []fieldError {
	out := make([]fieldError, 0, len(list))
	for _, e := range list {
		badValueJSON := ""
		if e.Type != field.ErrorTypeTooLong && e.Type != field.ErrorTypeRequired {
			if b, err := json.Marshal(e.BadValue); err == nil {
				badValueJSON = string(b)
			}
		}
		out = append(out, fieldError{
			Type:         string(e.Type),
			Field:        e.Field,
			BadValue:     fmt.Sprintf("%v", e.BadValue),
			BadValueJSON: badValueJSON,
			Detail:       e.Detail,
			Error:        e.Error(),
		})
	}
	return out
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

func decode(raw json.RawMessage) (*registry.RegistryConfig, error) {
	cfg := &registry.RegistryConfig{}
	if err := runtime.DecodeInto(decoder, raw, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// external renders the decoded (defaulted) configuration as v1alpha3 JSON.
func external(cfg *registry.RegistryConfig) (json.RawMessage, error) {
	out := &v1alpha3.RegistryConfig{}
	if err := scheme.Convert(cfg, out, nil); err != nil {
		return nil, err
	}
	out.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha3.SchemeGroupVersion.String(), Kind: "RegistryConfig"}
	return json.Marshal(out)
}

func handleConfig(req request) map[string]any {
	newCfg, err := decode(req.Config)
	if err != nil {
		return map[string]any{"decodeError": err.Error()}
	}
	var oldCfg *registry.RegistryConfig
	if !isNull(req.Old) {
		if oldCfg, err = decode(req.Old); err != nil {
			return map[string]any{"decodeError": "old: " + err.Error()}
		}
	}

	allErrs := field.ErrorList{}
	unchanged := false
	if oldCfg != nil {
		// The webhook returns early (no validation at all) when both are semantically equal; reported here
		// as "unchanged" while the validation still runs, as the Python API is compared function by function.
		unchanged = equality.Semantic.DeepEqual(newCfg, oldCfg)
		allErrs = append(allErrs, validation.ValidateRegistryConfigUpdate(oldCfg, newCfg, providerConfigPath)...)
	}
	allErrs = append(allErrs, validation.ValidateRegistryConfig(newCfg, providerConfigPath)...)

	decoded, err := external(newCfg)
	if err != nil {
		return map[string]any{"fatal": "convert: " + err.Error()}
	}
	return map[string]any{"errors": convertErrors(allErrs), "decoded": decoded, "unchanged": unchanged}
}

func handleSecret(req request) map[string]any {
	if req.Secret == nil {
		return map[string]any{"fatal": "secret missing"}
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "garden-dev", Name: "creds"},
		Immutable:  req.Secret.Immutable,
		Data:       req.Secret.Data,
	}
	return map[string]any{"errors": convertErrors(validation.ValidateUpstreamRegistrySecret(secret, secretRefPath, req.Name))}
}

func handleNames(req request) map[string]any {
	return map[string]any{
		"labelValue":   registryutils.ComputeUpstreamLabelValue(req.Upstream),
		"resourceName": registryutils.ComputeKubernetesResourceName(req.Upstream),
		"upstreamURL":  registryutils.GetUpstreamURL(req.Upstream),
		"serviceName":  registryutils.ComputeServiceName(req.Upstream, req.Suffix),
	}
}

func handle(line []byte) (resp map[string]any) {
	defer func() {
		if r := recover(); r != nil {
			resp = map[string]any{"fatal": fmt.Sprintf("panic: %v", r)}
		}
	}()
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return map[string]any{"fatal": "bad request: " + err.Error()}
	}
	switch req.Op {
	case "config":
		return handleConfig(req)
	case "secret":
		return handleSecret(req)
	case "names":
		return handleNames(req)
	case "upstream":
		return map[string]any{"errors": convertErrors(validation.ValidateUpstream(providerConfigPath.Child("caches").Index(0).Child("upstream"), req.Upstream))}
	case "url":
		return map[string]any{"errors": convertErrors(validation.ValidateURL(providerConfigPath.Child("caches").Index(0).Child("remoteURL"), req.URL, false))}
	default:
		return map[string]any{"fatal": fmt.Sprintf("unknown op %q", req.Op)}
	}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for in.Scan() {
		if len(in.Bytes()) == 0 {
			continue
		}
		if err := enc.Encode(handle(in.Bytes())); err != nil {
			fmt.Fprintln(os.Stderr, "encode:", err)
			os.Exit(1)
		}
		// Flush per line so a caller may also talk to the process interactively.
		if err := out.Flush(); err != nil {
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "read:", err)
		os.Exit(1)
	}
}
