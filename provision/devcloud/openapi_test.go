package devcloud

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// spec is the parsed OpenAPI document with just enough of a validator for its own schemas:
// type, properties, required, additionalProperties: false, items, enum, min/max, nullable,
// formats date-time and byte, $ref.
type spec struct{ doc map[string]any }

func loadSpec(t testing.TB) *spec {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi.yaml: openapi = %q; want 3.x", v)
	}
	return &spec{doc: doc}
}

func (s *spec) resolve(n map[string]any) map[string]any {
	for {
		ref, ok := n["$ref"].(string)
		if !ok {
			return n
		}
		cur := any(s.doc)
		for _, p := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = cur.(map[string]any)[p]
		}
		n = cur.(map[string]any)
	}
}

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head"}

// operations returns "METHOD /path" for every operation in the document.
func (s *spec) operations() []string {
	var out []string
	for p, item := range s.doc["paths"].(map[string]any) {
		for m := range item.(map[string]any) {
			if slices.Contains(httpMethods, m) {
				out = append(out, strings.ToUpper(m)+" "+p)
			}
		}
	}
	sort.Strings(out)
	return out
}

// response finds the schema for a response, or reports why there is none.
func (s *spec) response(method, path string, status int) (map[string]any, error) {
	item, ok := s.doc["paths"].(map[string]any)[path].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("path %s not documented", path)
	}
	op, ok := item[strings.ToLower(method)].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s %s not documented", method, path)
	}
	resp, ok := op["responses"].(map[string]any)[strconv.Itoa(status)].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s %s: status %d not documented", method, path, status)
	}
	resp = s.resolve(resp)
	content, ok := resp["content"].(map[string]any)
	if !ok {
		return nil, nil // documented without a body (204, 304)
	}
	mt, ok := content["application/json"].(map[string]any)
	if !ok {
		return nil, nil
	}
	return mt["schema"].(map[string]any), nil
}

// validate checks v (decoded JSON) against schema and returns the problems, naming paths.
func (s *spec) validate(schema map[string]any, v any, path string) []string {
	schema = s.resolve(schema)
	if v == nil {
		if n, _ := schema["nullable"].(bool); n {
			return nil
		}
		return []string{path + ": null"}
	}
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }
	if enum, ok := schema["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			if fmt.Sprint(e) == fmt.Sprint(v) {
				found = true
			}
		}
		if !found {
			bad("%v not in enum %v", v, enum)
		}
	}
	num := func(x float64) {
		if m, ok := schema["minimum"]; ok && x < toFloat(m) {
			bad("%v below minimum %v", x, m)
		}
		if m, ok := schema["maximum"]; ok && x > toFloat(m) {
			bad("%v above maximum %v", x, m)
		}
	}
	switch schema["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("%T; want object", v)
			return errs
		}
		props, _ := schema["properties"].(map[string]any)
		for _, r := range asStrings(schema["required"]) {
			if _, ok := m[r]; !ok {
				bad("required member %q missing", r)
			}
		}
		for k, sub := range m {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if ap, ok := schema["additionalProperties"].(bool); ok && !ap {
					bad("member %q not in the schema", k)
				}
				continue
			}
			errs = append(errs, s.validate(ps, sub, path+"."+k)...)
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad("%T; want array", v)
			return errs
		}
		if m, ok := schema["minItems"]; ok && len(a) < int(toFloat(m)) {
			bad("%d items; minimum %v", len(a), m)
		}
		if m, ok := schema["maxItems"]; ok && len(a) > int(toFloat(m)) {
			bad("%d items; maximum %v", len(a), m)
		}
		if items, ok := schema["items"].(map[string]any); ok {
			for i, e := range a {
				errs = append(errs, s.validate(items, e, fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			bad("%T; want string", v)
			return errs
		}
		switch schema["format"] {
		case "date-time":
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				bad("%q is not date-time", str)
			}
		case "byte":
			if _, err := base64.StdEncoding.DecodeString(str); err != nil {
				bad("not base64")
			}
		}
		if p, ok := schema["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(str) {
			bad("%q does not match %s", str, p)
		}
	case "integer":
		f, ok := v.(float64)
		if !ok || f != float64(int64(f)) {
			bad("%v; want integer", v)
			return errs
		}
		num(f)
	case "number":
		f, ok := v.(float64)
		if !ok {
			bad("%v; want number", v)
			return errs
		}
		num(f)
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("%T; want boolean", v)
		}
	}
	return errs
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int:
		return float64(x)
	case float64:
		return x
	}
	return 0
}

func asStrings(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, e := range a {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

// docPath turns a ServeMux pattern into the document's path template.
func docPath(pattern string) string {
	return strings.ReplaceAll(pattern, "...}", "}")
}

// TestOpenAPIMatchesRoutes: every route the server registers is documented, and every
// documented operation is served (the OTA directory counts when configured).
func TestOpenAPIMatchesRoutes(t *testing.T) {
	sp := loadSpec(t)
	s, err := New(Config{DataDir: t.TempDir(), OTADir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var served []string
	for _, r := range s.Routes() {
		served = append(served, r.Method+" "+docPath(r.Pattern))
	}
	served = append(served, "GET /ota/{path}") // MountStatic(api.PathOTARepo, OTADir)
	sort.Strings(served)
	docs := sp.operations()
	for _, op := range served {
		if !slices.Contains(docs, op) {
			t.Errorf("served route %s is not in openapi.yaml", op)
		}
	}
	for _, op := range docs {
		if !slices.Contains(served, op) {
			t.Errorf("openapi.yaml documents %s, which the server does not serve", op)
		}
	}
	// Every $ref resolves.
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				func() {
					defer func() {
						if recover() != nil {
							t.Errorf("$ref %s does not resolve", ref)
						}
					}()
					sp.resolve(x)
				}()
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(sp.doc)
}
