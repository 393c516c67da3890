// promqlcheck parses PromQL expressions with Prometheus' own parser and prints the metric names
// each one selects. Input: JSON on stdin, {"<where>": "<expr>", ...}. Output: JSON
// {"<where>": ["metric", ...]}; exit 1 with the parse errors if any expression is invalid.
// Run by deploy/tools/k8s_checks.py for the PrometheusRule alerts and the Grafana dashboard.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	var exprs map[string]string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "reading input:", err)
		os.Exit(2)
	}
	out := map[string][]string{}
	failed := false
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, where := range keys {
		expr, err := parser.ParseExpr(exprs[where])
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", where, err)
			failed = true
			continue
		}
		names := map[string]bool{}
		for _, sel := range parser.ExtractSelectors(expr) {
			for _, m := range sel {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					names[m.Value] = true
				}
			}
		}
		list := []string{}
		for n := range names {
			list = append(list, n)
		}
		sort.Strings(list)
		out[where] = list
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
