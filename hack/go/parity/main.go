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
//	{"op":"upstream","upstream":"..."} / {"op":"url","url":"...","allowPath":bool}
//	    -> {"errors": [...]} from ValidateUpstream / ValidateURL(..., allowPath)
//	{"op":"mirror","config":{...}}
//	    decode a MirrorConfig as the registry-mirror admission webhook does (strict UniversalDecoder, defaults),
//	    then ValidateMirrorConfig -> {"decodeError": "..."} or {"errors": [...], "decoded": <v1alpha1 JSON>}
//	{"op":"caBundle","secret":{"immutable":bool|null,"data":{...}},"name":"ref-name"}
//	    -> {"errors": [...]} from ValidateMirrorHostCABundleSecret on Secret garden-dev/ca-bundle
//	{"op":"mirrorShoot","shoot":{"namespace","extensions":[{"type","providerConfig"}],"workers":["containerd"],
//	                             "resources":[{"name","kind","refName"}]},"secrets":[{"name","immutable","data"}]}
//	    the registry-mirror Shoot validator (pkg/admission/validator/mirror) on a Shoot of the internal API,
//	    reading the Secrets from a fake client -> {"errors": [...]} (field errors) or {"error": "..."} (a plain
//	    error, e.g. a worker without containerd, a config that does not decode, a Secret that is not there)
//
// Each error is {"type","field","badValue","badValueJSON","detail","error"}. A request that cannot be
// handled yields {"fatal": "..."}; the process itself only exits at the end of its input.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/gardener/gardener/pkg/apis/core"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	fakeclient "sigs.k8s.io/controller-runtime/pkg/client/fake"

	mirroradmission "github.com/gardener/gardener-extension-registry-cache/pkg/admission/validator/mirror"
	"github.com/gardener/gardener-extension-registry-cache/pkg/apis/mirror"
	mirrorinstall "github.com/gardener/gardener-extension-registry-cache/pkg/apis/mirror/install"
	mirrorv1alpha1 "github.com/gardener/gardener-extension-registry-cache/pkg/apis/mirror/v1alpha1"
	mirrorvalidation "github.com/gardener/gardener-extension-registry-cache/pkg/apis/mirror/validation"
	"github.com/gardener/gardener-extension-registry-cache/pkg/apis/registry"
	"github.com/gardener/gardener-extension-registry-cache/pkg/apis/registry/install"
	"github.com/gardener/gardener-extension-registry-cache/pkg/apis/registry/v1alpha3"
	"github.com/gardener/gardener-extension-registry-cache/pkg/apis/registry/validation"
	registryutils "github.com/gardener/gardener-extension-registry-cache/pkg/utils/registry"
)

type request struct {
	Op        string          `json:"op"`
	Config    json.RawMessage `json:"config"`
	Old       json.RawMessage `json:"old"`
	Secret    *secretInput    `json:"secret"`
	Name      string          `json:"name"`
	Upstream  string          `json:"upstream"`
	Suffix    *string         `json:"suffix"`
	URL       string          `json:"url"`
	AllowPath bool            `json:"allowPath"`
	Shoot     *shootInput     `json:"shoot"`
	Secrets   []namedSecret   `json:"secrets"`
}

type shootInput struct {
	Namespace  string `json:"namespace"`
	Extensions []struct {
		Type           string          `json:"type"`
		ProviderConfig json.RawMessage `json:"providerConfig"`
	} `json:"extensions"`
	Workers   []string `json:"workers"`
	Resources []struct {
		Name    string `json:"name"`
		Kind    string `json:"kind"`
		RefName string `json:"refName"`
	} `json:"resources"`
}

type namedSecret struct {
	Name string `json:"name"`
	secretInput
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
	caBundleRefPath    = providerConfigPath.Child("mirrors").Index(0).Child("hosts").Index(0).Child("caBundleSecretReferenceName")
)

func init() {
	install.Install(scheme)
	// The admission binary installs both APIs into one scheme (pkg/admission/cmd).
	mirrorinstall.Install(scheme)
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

func handleMirror(req request) map[string]any {
	cfg := &mirror.MirrorConfig{}
	if err := runtime.DecodeInto(decoder, req.Config, cfg); err != nil {
		return map[string]any{"decodeError": err.Error()}
	}
	allErrs := mirrorvalidation.ValidateMirrorConfig(cfg, providerConfigPath)
	out := &mirrorv1alpha1.MirrorConfig{}
	if err := scheme.Convert(cfg, out, nil); err != nil {
		return map[string]any{"fatal": "convert: " + err.Error()}
	}
	out.TypeMeta = metav1.TypeMeta{APIVersion: mirrorv1alpha1.SchemeGroupVersion.String(), Kind: "MirrorConfig"}
	decoded, err := json.Marshal(out)
	if err != nil {
		return map[string]any{"fatal": "marshal: " + err.Error()}
	}
	return map[string]any{"errors": convertErrors(allErrs), "decoded": json.RawMessage(decoded)}
}

func handleCABundle(req request) map[string]any {
	if req.Secret == nil {
		return map[string]any{"fatal": "secret missing"}
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "garden-dev", Name: "ca-bundle"},
		Immutable:  req.Secret.Immutable,
		Data:       req.Secret.Data,
	}
	return map[string]any{"errors": convertErrors(mirrorvalidation.ValidateMirrorHostCABundleSecret(secret, caBundleRefPath, req.Name))}
}

// handleMirrorShoot runs the registry-mirror Shoot validator of the admission webhook on a Shoot of the internal
// API (as the API server hands it to the webhook, CRI already defaulted), with the Secrets in a fake client.
func handleMirrorShoot(req request) map[string]any {
	in := req.Shoot
	if in == nil {
		return map[string]any{"fatal": "shoot missing"}
	}
	shoot := &core.Shoot{ObjectMeta: metav1.ObjectMeta{Name: "crazy-botany", Namespace: in.Namespace}}
	for _, ext := range in.Extensions {
		e := core.Extension{Type: ext.Type}
		if !isNull(ext.ProviderConfig) {
			e.ProviderConfig = &runtime.RawExtension{Raw: ext.ProviderConfig}
		}
		shoot.Spec.Extensions = append(shoot.Spec.Extensions, e)
	}
	for _, cri := range in.Workers {
		shoot.Spec.Provider.Workers = append(shoot.Spec.Provider.Workers, core.Worker{CRI: &core.CRI{Name: core.CRIName(cri)}})
	}
	for _, r := range in.Resources {
		shoot.Spec.Resources = append(shoot.Spec.Resources, core.NamedResourceReference{
			Name:        r.Name,
			ResourceRef: autoscalingv1.CrossVersionObjectReference{APIVersion: "v1", Kind: r.Kind, Name: r.RefName},
		})
	}
	objects := make([]client.Object, 0, len(req.Secrets))
	for _, s := range req.Secrets {
		objects = append(objects, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: in.Namespace, Name: s.Name},
			Immutable:  s.Immutable,
			Data:       s.Data,
		})
	}
	reader := fakeclient.NewClientBuilder().WithObjects(objects...).Build()
	err := mirroradmission.NewShootValidator(reader, decoder).Validate(context.Background(), shoot, nil)
	if err == nil {
		return map[string]any{"errors": []fieldError{}}
	}
	var list field.ErrorList
	var single *field.Error
	var aggregate utilerrors.Aggregate
	switch {
	case errors.As(err, &aggregate):
		for _, e := range aggregate.Errors() {
			fe, ok := e.(*field.Error)
			if !ok {
				return map[string]any{"error": err.Error()}
			}
			list = append(list, fe)
		}
	case errors.As(err, &single):
		list = field.ErrorList{single}
	default:
		return map[string]any{"error": err.Error()}
	}
	return map[string]any{"errors": convertErrors(list)}
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
		return map[string]any{"errors": convertErrors(validation.ValidateURL(providerConfigPath.Child("caches").Index(0).Child("remoteURL"), req.URL, req.AllowPath))}
	case "mirror":
		return handleMirror(req)
	case "caBundle":
		return handleCABundle(req)
	case "mirrorShoot":
		return handleMirrorShoot(req)
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
