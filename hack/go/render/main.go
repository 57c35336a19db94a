// Command gardener-render delivers a Shoot's registry caches and mirrors with the real code of
// github.com/gardener/gardener-extension-registry-cache, into a controller-runtime fake client, and writes what was
// delivered as JSON. One JSON line in, one JSON line out per case, so that
// tests/integration/test_gardener_rendering.py can compare it field by field with what this project delivers.
//
// Request (one line):
//
//	{"namespace": "shoot--dev--crazy-botany",      the shoot namespace of the seed
//	 "shoot": {...},                                the Shoot (core.gardener.cloud/v1beta1), put into the Cluster
//	 "secrets": [{"name","data"}],                  Secrets of the seed namespace: gardenlet's ref-<name> copies
//	 "clusterIPs": {"<service name>": "10.4.0.10"}, what the shoot's API server assigns to each cache Service
//	 "osc": {"criConfig": {...}, "files": [...]}}   the OperatingSystemConfig spec before the webhooks
//
// What it does, in the order of the registry-cache actuator's Reconcile (pkg/controller/cache/actuator.go), whose
// glue is re-typed here because it reaches the shoot through a kubeconfig Secret and an API server:
//
//  1. the Cluster is read with Gardener's GetCluster; a hibernated Shoot gets nothing (the actuator returns);
//  2. the registry-cache Extension's providerConfig is decoded with the actuator's strict decoder;
//  3. registrycacheservices.New(...).Deploy: a ManagedResource with the Services. The Services are read back from
//     it, given the cluster IPs of the request and sorted by name (the order an API server lists them in: the
//     actuator lists them from the shoot);
//  4. the secrets manager as the actuator makes it (SecretsManagerForCluster, ConfigsFor of no Services), the
//     image from the extension's image vector, registrycaches.New(...).Deploy with the actuator's Values
//     (VPAEnabled: ShootWantsVerticalPodAutoscaler; MonitoringEnabled: purpose is not testing; ResourceReferences:
//     spec.resources);
//  5. the provider status as computeProviderStatus makes it, then the secrets manager's Cleanup;
//  6. the Extensions of both types are put into the fake client (registry-cache with that status, registry-mirror
//     with its providerConfig) and the ensurers of pkg/webhook/cache and pkg/webhook/mirror mutate the
//     OperatingSystemConfig spec of the request (EnsureCRIConfig, EnsureAdditionalFiles), with the webhook's
//     GardenContext (the Cluster read from the client), registry-cache first.
//
// Answer:
//
//	{"hibernated": bool,
//	 "shoot": [objects],          the objects of the ManagedResources (decoded from their Secrets), as serialized
//	 "managedResources": [names], the ManagedResources they came from
//	 "seed": [objects],           everything else the components wrote into the seed namespace (ManagedResources
//	                              and their Secrets, the secrets manager's Secrets, monitoring), the request's
//	                              Secrets left out; a ManagedResource Secret's data values are replaced by
//	                              "<serialized objects>" (they are the shoot objects above)
//	 "status": {...}|null,        the RegistryStatus (v1alpha3 JSON) the actuator reports
//	 "osc": {"criConfig","files"},
//	 "error": "..."               when the actuator or an ensurer failed (the step is named)}
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"

	"github.com/andybalholm/brotli"
	extensionscontroller "github.com/gardener/gardener/extensions/pkg/controller"
	extensionssecretsmanager "github.com/gardener/gardener/extensions/pkg/util/secret/manager"
	extensionscontextwebhook "github.com/gardener/gardener/extensions/pkg/webhook/context"
	"github.com/gardener/gardener/extensions/pkg/webhook/controlplane/genericmutator"
	v1beta1helper "github.com/gardener/gardener/pkg/api/core/v1beta1/helper"
	gardencorev1beta1 "github.com/gardener/gardener/pkg/apis/core/v1beta1"
	extensionsv1alpha1 "github.com/gardener/gardener/pkg/apis/extensions/v1alpha1"
	resourcesv1alpha1 "github.com/gardener/gardener/pkg/apis/resources/v1alpha1"
	"github.com/gardener/gardener/pkg/client/kubernetes"
	"github.com/go-logr/logr"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	fakeclient "sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	"github.com/gardener/gardener-extension-registry-cache/imagevector"
	mirrorinstall "github.com/gardener/gardener-extension-registry-cache/pkg/apis/mirror/install"
	registryapi "github.com/gardener/gardener-extension-registry-cache/pkg/apis/registry"
	registryinstall "github.com/gardener/gardener-extension-registry-cache/pkg/apis/registry/install"
	"github.com/gardener/gardener-extension-registry-cache/pkg/apis/registry/v1alpha3"
	"github.com/gardener/gardener-extension-registry-cache/pkg/component/registrycaches"
	"github.com/gardener/gardener-extension-registry-cache/pkg/component/registrycacheservices"
	"github.com/gardener/gardener-extension-registry-cache/pkg/constants"
	"github.com/gardener/gardener-extension-registry-cache/pkg/secrets"
	cacheensurer "github.com/gardener/gardener-extension-registry-cache/pkg/webhook/cache"
	mirrorensurer "github.com/gardener/gardener-extension-registry-cache/pkg/webhook/mirror"
)

const (
	cacheType  = "registry-cache"
	mirrorType = "registry-mirror"
	// the names the components give their ManagedResources (registrycacheservices, registrycaches)
	servicesManagedResource = "extension-registry-cache-services"
	cachesManagedResource   = "extension-registry-cache"
)

type request struct {
	Namespace  string            `json:"namespace"`
	Shoot      json.RawMessage   `json:"shoot"`
	Secrets    []namedSecret     `json:"secrets"`
	ClusterIPs map[string]string `json:"clusterIPs"`
	OSC        struct {
		CRIConfig *extensionsv1alpha1.CRIConfig `json:"criConfig"`
		Files     []extensionsv1alpha1.File     `json:"files"`
	} `json:"osc"`
}

type namedSecret struct {
	Name string            `json:"name"`
	Data map[string][]byte `json:"data"`
}

type answer struct {
	Hibernated       bool             `json:"hibernated"`
	Shoot            []map[string]any `json:"shoot"`
	ManagedResources []string         `json:"managedResources"`
	Seed             []map[string]any `json:"seed"`
	Status           json.RawMessage  `json:"status"`
	OSC              map[string]any   `json:"osc"`
	Error            string           `json:"error,omitempty"`
}

var (
	// The extension's scheme, as its manager builds it (cmd/gardener-extension-registry-cache/app/app.go).
	extensionScheme = runtime.NewScheme()
	// The actuator's decoder (pkg/controller/cache/add.go) and the ensurers' (pkg/webhook/*/webhook.go).
	actuatorDecoder runtime.Decoder
	ensurerDecoder  runtime.Decoder
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		extensionscontroller.AddToScheme, registryinstall.AddToScheme, mirrorinstall.AddToScheme,
		monitoringv1.AddToScheme, monitoringv1alpha1.AddToScheme,
	} {
		if err := add(extensionScheme); err != nil {
			panic(err)
		}
	}
	actuatorDecoder = serializer.NewCodecFactory(extensionScheme, serializer.EnableStrict).UniversalDecoder()
	ensurerDecoder = serializer.NewCodecFactory(extensionScheme).UniversalDecoder()
}

// enabled returns the providerConfig of the extension of type typ, and whether the Shoot enables it (gardenlet
// creates Extension resources only for those).
func enabled(shoot *gardencorev1beta1.Shoot, typ string) (*runtime.RawExtension, bool) {
	for _, ext := range shoot.Spec.Extensions {
		if ext.Type == typ && (ext.Disabled == nil || !*ext.Disabled) {
			return ext.ProviderConfig, true
		}
	}
	return nil, false
}

func render(ctx context.Context, req request) (out answer, err error) {
	out.Shoot, out.Seed, out.ManagedResources = []map[string]any{}, []map[string]any{}, []string{}
	out.Status = json.RawMessage("null")
	if req.Namespace == "" || len(req.Shoot) == 0 {
		return out, fmt.Errorf("namespace and shoot are required")
	}

	objects := []client.Object{&extensionsv1alpha1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Name: req.Namespace},
		Spec: extensionsv1alpha1.ClusterSpec{
			CloudProfile: runtime.RawExtension{Raw: []byte(`{"apiVersion":"core.gardener.cloud/v1beta1","kind":"CloudProfile"}`)},
			Seed:         &runtime.RawExtension{Raw: []byte(`{"apiVersion":"core.gardener.cloud/v1beta1","kind":"Seed"}`)},
			Shoot:        runtime.RawExtension{Raw: req.Shoot},
		},
	}}
	inputs := map[string]bool{}
	for _, s := range req.Secrets {
		inputs[s.Name] = true
		objects = append(objects, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: req.Namespace, Name: s.Name}, Data: s.Data})
	}
	c := fakeclient.NewClientBuilder().WithScheme(kubernetes.SeedScheme).WithObjects(objects...).Build()

	cluster, err := extensionscontroller.GetCluster(ctx, c, req.Namespace)
	if err != nil {
		return out, fmt.Errorf("get cluster: %w", err)
	}
	shoot := cluster.Shoot

	var status *v1alpha3.RegistryStatus
	cacheConfig, cacheEnabled := enabled(shoot, cacheType)
	if cacheEnabled {
		if v1beta1helper.HibernationIsEnabled(shoot) {
			out.Hibernated = true
		} else {
			status, err = reconcile(ctx, c, cluster, cacheConfig, req.ClusterIPs)
			if err != nil {
				return out, fmt.Errorf("registry-cache actuator: %w", err)
			}
			raw, err := json.Marshal(status)
			if err != nil {
				return out, err
			}
			out.Status = raw
		}
	}

	// The shoot's objects, from the ManagedResources the components wrote.
	mrs := &resourcesv1alpha1.ManagedResourceList{}
	if err := c.List(ctx, mrs, client.InNamespace(req.Namespace)); err != nil {
		return out, err
	}
	sort.Slice(mrs.Items, func(i, j int) bool { return mrs.Items[i].Name < mrs.Items[j].Name })
	mrSecrets := map[string]bool{}
	for _, mr := range mrs.Items {
		out.ManagedResources = append(out.ManagedResources, mr.Name)
		for _, ref := range mr.Spec.SecretRefs {
			mrSecrets[ref.Name] = true
			secret := &corev1.Secret{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: req.Namespace, Name: ref.Name}, secret); err != nil {
				return out, fmt.Errorf("ManagedResource %s: %w", mr.Name, err)
			}
			docs, err := managedObjects(secret)
			if err != nil {
				return out, fmt.Errorf("ManagedResource %s: %w", mr.Name, err)
			}
			out.Shoot = append(out.Shoot, docs...)
		}
	}

	// Everything else in the seed namespace.
	for _, list := range []client.ObjectList{
		&resourcesv1alpha1.ManagedResourceList{}, &corev1.SecretList{}, &corev1.ConfigMapList{},
		&monitoringv1.PrometheusRuleList{}, &monitoringv1alpha1.ScrapeConfigList{},
	} {
		if err := c.List(ctx, list, client.InNamespace(req.Namespace)); err != nil {
			return out, err
		}
		items, err := listObjects(list)
		if err != nil {
			return out, err
		}
		for _, obj := range items {
			if _, ok := obj.(*corev1.Secret); ok && inputs[obj.GetName()] {
				continue
			}
			u, err := toMap(obj)
			if err != nil {
				return out, err
			}
			if mrSecrets[obj.GetName()] {
				if data, ok := u["data"].(map[string]any); ok {
					for k := range data {
						data[k] = "<serialized objects>"
					}
				}
			}
			out.Seed = append(out.Seed, u)
		}
	}

	// The OperatingSystemConfig webhooks.
	osc, err := ensure(ctx, c, req, shoot, status)
	out.OSC = osc
	if err != nil {
		return out, err
	}
	return out, nil
}

// reconcile is the registry-cache actuator's Reconcile after the hibernation check.
func reconcile(ctx context.Context, c client.Client, cluster *extensionscontroller.Cluster, providerConfig *runtime.RawExtension,
	clusterIPs map[string]string) (*v1alpha3.RegistryStatus, error) {
	if providerConfig == nil {
		return nil, fmt.Errorf("providerConfig is required for the registry-cache extension")
	}
	registryConfig := &registryapi.RegistryConfig{}
	if err := runtime.DecodeInto(actuatorDecoder, providerConfig.Raw, registryConfig); err != nil {
		return nil, fmt.Errorf("failed to decode provider config: %w", err)
	}
	namespace := cluster.ObjectMeta.Name

	if err := registrycacheservices.New(c, c, namespace, registrycacheservices.Values{Caches: registryConfig.Caches}).Deploy(ctx); err != nil {
		return nil, fmt.Errorf("failed to deploy the registry cache services component: %w", err)
	}
	// fetchRegistryCacheServices: the Services as the shoot's API server lists them (by name), cluster IPs assigned.
	delivered, err := objectsOf(ctx, c, namespace, servicesManagedResource)
	if err != nil {
		return nil, err
	}
	var services []corev1.Service
	for _, doc := range delivered {
		raw, err := json.Marshal(doc)
		if err != nil {
			return nil, err
		}
		service := corev1.Service{}
		if err := json.Unmarshal(raw, &service); err != nil {
			return nil, err
		}
		if _, ok := service.Labels[constants.UpstreamHostLabel]; !ok || service.Namespace != metav1.NamespaceSystem {
			continue
		}
		ip, ok := clusterIPs[service.Name]
		if !ok {
			return nil, fmt.Errorf("no cluster IP given for Service %s", service.Name)
		}
		service.Spec.ClusterIP = ip
		services = append(services, service)
	}
	sort.Slice(services, func(i, j int) bool { return services[i].Name < services[j].Name })
	if len(services) != len(registryConfig.Caches) {
		return nil, fmt.Errorf("not all services for all configured caches exist")
	}

	secretsManager, err := extensionssecretsmanager.SecretsManagerForCluster(ctx, logr.Discard(), clock.RealClock{}, c, cluster,
		secrets.ManagerIdentity, secrets.ConfigsFor([]corev1.Service{}))
	if err != nil {
		return nil, err
	}
	image, err := imagevector.ImageVector().FindImage("registry")
	if err != nil {
		return nil, fmt.Errorf("failed to find the registry image: %w", err)
	}
	caches := registrycaches.New(c, namespace, secretsManager, registrycaches.Values{
		Image:              image.String(),
		VPAEnabled:         v1beta1helper.ShootWantsVerticalPodAutoscaler(cluster.Shoot),
		MonitoringEnabled:  v1beta1helper.GetPurpose(cluster.Shoot) != gardencorev1beta1.ShootPurposeTesting,
		Services:           services,
		Caches:             registryConfig.Caches,
		ResourceReferences: cluster.Shoot.Spec.Resources,
	})
	if err := caches.Deploy(ctx); err != nil {
		return nil, fmt.Errorf("failed to deploy the registry caches component: %w", err)
	}
	status := computeProviderStatus(services, caches.CASecretName())
	if err := secretsManager.Cleanup(ctx); err != nil {
		return nil, fmt.Errorf("failed to cleanup secrets: %w", err)
	}
	return status, nil
}

// computeProviderStatus as pkg/controller/cache/actuator.go has it (unexported there).
func computeProviderStatus(services []corev1.Service, caSecretName *string) *v1alpha3.RegistryStatus {
	caches := make([]v1alpha3.RegistryCacheStatus, 0, len(services))
	for _, service := range services {
		caches = append(caches, v1alpha3.RegistryCacheStatus{
			Upstream:  service.Annotations[constants.UpstreamAnnotation],
			Endpoint:  fmt.Sprintf("%s://%s", service.Annotations[constants.SchemeAnnotation], net.JoinHostPort(service.Spec.ClusterIP, fmt.Sprintf("%d", constants.RegistryCacheServerPort))),
			RemoteURL: service.Annotations[constants.RemoteURLAnnotation],
		})
	}
	return &v1alpha3.RegistryStatus{
		TypeMeta:     metav1.TypeMeta{APIVersion: v1alpha3.SchemeGroupVersion.String(), Kind: "RegistryStatus"},
		Caches:       caches,
		CASecretName: caSecretName,
	}
}

// ensure runs the OperatingSystemConfig ensurers of both extension types on the request's OSC spec.
func ensure(ctx context.Context, c client.Client, req request, shoot *gardencorev1beta1.Shoot, status *v1alpha3.RegistryStatus) (map[string]any, error) {
	cri := req.OSC.CRIConfig
	if cri == nil {
		cri = &extensionsv1alpha1.CRIConfig{Name: extensionsv1alpha1.CRINameContainerD}
	}
	files := append([]extensionsv1alpha1.File{}, req.OSC.Files...)
	result := func() map[string]any {
		return map[string]any{"criConfig": cri, "files": files}
	}

	osc := &extensionsv1alpha1.OperatingSystemConfig{ObjectMeta: metav1.ObjectMeta{Namespace: req.Namespace, Name: "osc"}}
	gctx := extensionscontextwebhook.NewGardenContext(c, osc)
	type step struct {
		typ     string
		ensurer genericmutator.Ensurer
	}
	var steps []step
	if _, ok := enabled(shoot, cacheType); ok {
		ext := &extensionsv1alpha1.Extension{
			ObjectMeta: metav1.ObjectMeta{Namespace: req.Namespace, Name: cacheType},
			Spec:       extensionsv1alpha1.ExtensionSpec{DefaultSpec: extensionsv1alpha1.DefaultSpec{Type: cacheType}},
		}
		if status != nil {
			raw, err := json.Marshal(status)
			if err != nil {
				return result(), err
			}
			ext.Status.ProviderStatus = &runtime.RawExtension{Raw: raw}
		}
		if err := c.Create(ctx, ext); err != nil {
			return result(), err
		}
		steps = append(steps, step{cacheType, cacheensurer.NewEnsurer(c, ensurerDecoder, logr.Discard())})
	}
	if providerConfig, ok := enabled(shoot, mirrorType); ok {
		ext := &extensionsv1alpha1.Extension{
			ObjectMeta: metav1.ObjectMeta{Namespace: req.Namespace, Name: mirrorType},
			Spec: extensionsv1alpha1.ExtensionSpec{DefaultSpec: extensionsv1alpha1.DefaultSpec{
				Type: mirrorType, ProviderConfig: providerConfig,
			}},
		}
		if err := c.Create(ctx, ext); err != nil {
			return result(), err
		}
		steps = append(steps, step{mirrorType, mirrorensurer.NewEnsurer(c, ensurerDecoder, logr.Discard())})
	}
	for _, s := range steps {
		if err := s.ensurer.EnsureCRIConfig(ctx, gctx, cri, nil); err != nil {
			return result(), fmt.Errorf("%s OperatingSystemConfig webhook: EnsureCRIConfig: %w", s.typ, err)
		}
		if err := s.ensurer.EnsureAdditionalFiles(ctx, gctx, &files, nil); err != nil {
			return result(), fmt.Errorf("%s OperatingSystemConfig webhook: EnsureAdditionalFiles: %w", s.typ, err)
		}
	}
	return result(), nil
}

// objectsOf returns the objects of a ManagedResource, as serialized into its Secrets.
func objectsOf(ctx context.Context, c client.Client, namespace, name string) ([]map[string]any, error) {
	mr := &resourcesv1alpha1.ManagedResource{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, mr); err != nil {
		return nil, err
	}
	var out []map[string]any
	for _, ref := range mr.Spec.SecretRefs {
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, secret); err != nil {
			return nil, err
		}
		docs, err := managedObjects(secret)
		if err != nil {
			return nil, err
		}
		out = append(out, docs...)
	}
	return out, nil
}

// managedObjects decodes the objects of a ManagedResource Secret (as gardener-resource-manager reads them: keys in
// order, brotli-compressed ones decompressed, YAML documents separated by "---"), as generic JSON objects.
func managedObjects(secret *corev1.Secret) ([]map[string]any, error) {
	keys := make([]string, 0, len(secret.Data))
	for k := range secret.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []map[string]any
	for _, key := range keys {
		data := secret.Data[key]
		if strings.HasSuffix(key, resourcesv1alpha1.BrotliCompressionSuffix) {
			var err error
			if data, err = io.ReadAll(brotli.NewReader(bytes.NewReader(data))); err != nil {
				return nil, fmt.Errorf("key %s: %w", key, err)
			}
		}
		for doc := range strings.SplitSeq(string(data), "---\n") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			raw, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				return nil, fmt.Errorf("key %s: %w", key, err)
			}
			obj := map[string]any{}
			if err := json.Unmarshal(raw, &obj); err != nil {
				return nil, fmt.Errorf("key %s: %w", key, err)
			}
			out = append(out, obj)
		}
	}
	return out, nil
}

func listObjects(list client.ObjectList) ([]client.Object, error) {
	var out []client.Object
	switch l := list.(type) {
	case *resourcesv1alpha1.ManagedResourceList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *corev1.SecretList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *corev1.ConfigMapList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *monitoringv1.PrometheusRuleList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *monitoringv1alpha1.ScrapeConfigList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	default:
		return nil, fmt.Errorf("unexpected list %T", list)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, nil
}

// toMap renders a typed object as its JSON, with apiVersion and kind.
func toMap(obj client.Object) (map[string]any, error) {
	gvk, err := apiutil.GVKForObject(obj, kubernetes.SeedScheme)
	if err != nil {
		return nil, err
	}
	obj = obj.DeepCopyObject().(client.Object)
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func handle(line []byte) (resp any) {
	defer func() {
		if r := recover(); r != nil {
			resp = map[string]any{"fatal": fmt.Sprintf("panic: %v", r)}
		}
	}()
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return map[string]any{"fatal": "bad request: " + err.Error()}
	}
	out, err := render(context.Background(), req)
	if err != nil {
		out.Error = err.Error()
	}
	return out
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
		if err := out.Flush(); err != nil {
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "read:", err)
		os.Exit(1)
	}
}
