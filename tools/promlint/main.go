// Command promlint checks a Prometheus text exposition against the naming
// rules of client_golang's promlint (base units, _total on counters only, no
// unit abbreviations, snake_case, HELP on every family).
//
//	curl -s http://127.0.0.1:8080/metrics | promlint          # read stdin
//	promlint scrape-a.txt scrape-b.txt                        # read files
//
// Every problem is printed as "file: metric: text"; the exit status is 1 when
// there is any, 2 when an input cannot be read or parsed.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func lint(name string, data []byte) (int, error) {
	problems, err := promlint.New(bytes.NewReader(data)).Lint()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	for _, p := range problems {
		fmt.Printf("%s: %s: %s\n", name, p.Metric, p.Text)
	}
	return len(problems), nil
}

func main() {
	inputs := os.Args[1:]
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	total := 0
	for _, in := range inputs {
		var data []byte
		var err error
		if in == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(in)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		n, err := lint(in, data)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		total += n
	}
	if total > 0 {
		os.Exit(1)
	}
}
