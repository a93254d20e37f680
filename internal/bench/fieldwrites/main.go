// Command fieldwrites counts, for one struct type of a package, the places in its
// non-test files that write each field: assignments (=, op=, ++, --) to x.field and
// calls of a method on it that change it (x.field.Store, x.field.Reset, ...), and the
// functions and files they are in. It measures how widely a type's state is owned.
//
//	go run ./internal/bench/fieldwrites -dir ./tokencache -type entry -var e
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	dir := flag.String("dir", ".", "package directory")
	typ := flag.String("type", "", "struct type whose fields to count")
	recv := flag.String("var", "", "count only writes through variables of this name (e.g. e), to skip other types' fields of the same name")
	flag.Parse()
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, *dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fields := map[string]bool{}
	for _, p := range pkgs {
		for _, f := range p.Files {
			ast.Inspect(f, func(n ast.Node) bool {
				ts, ok := n.(*ast.TypeSpec)
				if !ok || ts.Name.Name != *typ {
					return true
				}
				if st, ok := ts.Type.(*ast.StructType); ok {
					for _, fl := range st.Fields.List {
						for _, nm := range fl.Names {
							fields[nm.Name] = true
						}
					}
				}
				return false
			})
		}
	}
	if len(fields) == 0 {
		fmt.Fprintf(os.Stderr, "no struct type %s in %s\n", *typ, *dir)
		os.Exit(1)
	}
	mutators := map[string]bool{"Store": true, "Swap": true, "CompareAndSwap": true, "Add": true, "Reset": true, "Stop": true}
	type site struct{ file, fn string }
	writes := map[string][]site{}
	for _, p := range pkgs {
		for name, f := range p.Files {
			file := filepath.Base(name)
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				record := func(e ast.Expr) {
					if sel, ok := e.(*ast.SelectorExpr); ok && fields[sel.Sel.Name] {
						if id, ok := sel.X.(*ast.Ident); *recv != "" && (!ok || id.Name != *recv) {
							return
						}
						writes[sel.Sel.Name] = append(writes[sel.Sel.Name], site{file, fd.Name.Name})
					}
				}
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					switch n := n.(type) {
					case *ast.AssignStmt:
						if n.Tok != token.DEFINE {
							for _, l := range n.Lhs {
								record(l)
							}
						}
					case *ast.IncDecStmt:
						record(n.X)
					case *ast.CallExpr:
						if sel, ok := n.Fun.(*ast.SelectorExpr); ok && mutators[sel.Sel.Name] {
							record(sel.X)
						}
					}
					return true
				})
			}
		}
	}
	names := make([]string, 0, len(fields))
	for f := range fields {
		names = append(names, f)
	}
	sort.Strings(names)
	total := 0
	for _, f := range names {
		ws := writes[f]
		files, fns := map[string]bool{}, map[string]bool{}
		for _, w := range ws {
			files[w.file] = true
			fns[w.fn] = true
		}
		total += len(ws)
		fmt.Printf("%-14s %3d sites in %2d functions, %d files %v\n", f, len(ws), len(fns), len(files), keys(files))
	}
	fmt.Printf("total %d write sites over %d fields\n", total, len(names))
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
