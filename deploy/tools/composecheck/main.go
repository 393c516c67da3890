// composecheck loads docker-compose.yml with the Compose specification's reference loader
// (github.com/compose-spec/compose-go, the library `docker compose` itself uses): YAML, anchors and
// merges, interpolation, JSON-schema validation and the consistency checks (depends_on targets,
// volumes, networks). Any error fails the check. It then asserts the start-order contract this
// project relies on, which the schema cannot know:
//
//   - kafka and postgres declare healthchecks;
//   - every <svc>-migrate one-shot runs `migrate` once, after postgres is healthy;
//   - every built service waits for healthy kafka and postgres and for its migrations to complete,
//     listens on 0.0.0.0:8080 in the container and publishes a host port;
//   - API_KEYS is a JSON list of {tenant_id, key_sha256 (64 hex)}: hashes only, never keys.
//
// Usage: go run . [path/to/docker-compose.yml]   (default: ../../../docker-compose.yml)
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

type apiKey struct {
	TenantID  string `json:"tenant_id"`
	KeySHA256 string `json:"key_sha256"`
}

func main() {
	path := filepath.Join("..", "..", "..", "docker-compose.yml")
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		fail(err)
	}
	// No OS environment and no .env: the file must be valid on its own, as CI and a newcomer see it.
	opts, err := cli.NewProjectOptions(
		[]string{abs},
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(fmt.Errorf("compose loader: %w", err))
	}

	var problems []string
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	for _, infra := range []string{"kafka", "postgres"} {
		svc, ok := project.Services[infra]
		if !ok {
			report("%s: service missing", infra)
			continue
		}
		if svc.HealthCheck == nil || svc.HealthCheck.Disable || len(svc.HealthCheck.Test) == 0 {
			report("%s: needs a healthcheck (the services start on service_healthy)", infra)
		}
	}

	var built []string
	for name, svc := range project.Services {
		if svc.Build != nil && !strings.HasSuffix(name, "-migrate") {
			built = append(built, name)
		}
	}
	sort.Strings(built)
	if len(built) == 0 {
		report("no service builds an image")
	}

	for _, name := range built {
		svc := project.Services[name]
		migrateName := name + "-migrate"
		mig, ok := project.Services[migrateName]
		if !ok {
			report("%s: no %s one-shot", name, migrateName)
		} else {
			if strings.Join(mig.Command, " ") != "migrate" {
				report("%s: command must be [\"migrate\"], got %q", migrateName, mig.Command)
			}
			if mig.Image != svc.Image {
				report("%s: must run the same image as %s (%q != %q)", migrateName, name, mig.Image, svc.Image)
			}
			wantCondition(report, migrateName, mig, "postgres", types.ServiceConditionHealthy)
			checkAPIKeys(report, migrateName, mig)
		}
		wantCondition(report, name, svc, "kafka", types.ServiceConditionHealthy)
		wantCondition(report, name, svc, "postgres", types.ServiceConditionHealthy)
		wantCondition(report, name, svc, migrateName, types.ServiceConditionCompletedSuccessfully)
		if v := env(svc, "HTTP_HOST"); v != "0.0.0.0" {
			report("%s: HTTP_HOST must be 0.0.0.0 in a container, got %q", name, v)
		}
		port := env(svc, "HTTP_PORT")
		published := false
		for _, p := range svc.Ports {
			if fmt.Sprint(p.Target) == port && p.Published != "" {
				published = true
			}
		}
		if !published {
			report("%s: container port %s (HTTP_PORT) is not published", name, port)
		}
		checkAPIKeys(report, name, svc)
	}

	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "compose:", p)
		}
		os.Exit(1)
	}
	fmt.Printf("compose: %s valid (compose-spec loader + schema); %d services, %d one-shot migrations, start order checked\n",
		filepath.Base(abs), len(built), len(built))
}

func env(svc types.ServiceConfig, key string) string {
	if v, ok := svc.Environment[key]; ok && v != nil {
		return *v
	}
	return ""
}

func wantCondition(report func(string, ...any), name string, svc types.ServiceConfig, dep, condition string) {
	d, ok := svc.DependsOn[dep]
	if !ok {
		report("%s: must depend on %s (%s)", name, dep, condition)
		return
	}
	if d.Condition != condition {
		report("%s: depends_on %s must use condition %s, got %q", name, dep, condition, d.Condition)
	}
}

func checkAPIKeys(report func(string, ...any), name string, svc types.ServiceConfig) {
	raw := env(svc, "API_KEYS")
	if raw == "" {
		return
	}
	var keys []apiKey
	if err := json.Unmarshal([]byte(raw), &keys); err != nil {
		report("%s: API_KEYS is not a JSON list: %v", name, err)
		return
	}
	for i, k := range keys {
		if k.TenantID == "" || !sha256Hex.MatchString(k.KeySHA256) {
			report("%s: API_KEYS[%d] needs tenant_id and a 64-hex key_sha256", name, i)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compose:", err)
	os.Exit(1)
}
