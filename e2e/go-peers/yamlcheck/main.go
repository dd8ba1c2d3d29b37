// yamlcheck: a test peer for csctl's YAML differential test (csctl/tests/yaml_differential.rs); nothing ships.
// It reads one YAML file, splits it into documents the way kubectl does (apimachinery's NewYAMLReader: a line
// starting with "---" followed by nothing but spaces or a comment ends a document), and prints one JSON line
// per document with what sigs.k8s.io/yaml makes of it: YAMLToJSONStrict (duplicate keys rejected) and
// YAMLToJSON (lenient), each either the JSON or the error.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

type result struct {
	JSON  json.RawMessage `json:"json,omitempty"`
	Error string          `json:"error,omitempty"`
}

type doc struct {
	Strict  result `json:"strict"`
	Lenient result `json:"lenient"`
}

func convert(f func([]byte) ([]byte, error), in []byte) result {
	out, err := f(in)
	if err != nil {
		return result{Error: err.Error()}
	}
	return result{JSON: out}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: yamlcheck FILE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer f.Close()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(f))
	out := json.NewEncoder(os.Stdout)
	for {
		chunk, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			// The splitter itself refused the stream (e.g. "--- text" on a marker line): one error line.
			_ = out.Encode(map[string]string{"split_error": err.Error()})
			return
		}
		_ = out.Encode(doc{
			Strict:  convert(func(b []byte) ([]byte, error) { return yaml.YAMLToJSONStrict(b) }, chunk),
			Lenient: convert(yaml.YAMLToJSON, chunk),
		})
	}
}
