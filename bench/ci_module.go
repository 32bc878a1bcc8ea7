package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The CI replay's module (-ci): a real open-source module from the module
// proxy, copied from the module cache into a local git repository, with the
// history's branches made of seeded edits (see ciHistory in ci_replay.go).

// defaultCIModule is the module the replay builds. expr v1.17.0 has 47
// packages, 39 of them with tests, no dependencies, tests that read files
// (expr_test.go, test/gen, test/crowdsec, internal/spew), and one package
// nearly everything imports (ast); a cold `go build ./... && go vet ./... &&
// go test -short ./...` takes about a minute on two idle cores. (Later
// versions add test/examples, a main package without func main, which
// `go build ./...` refuses.)
const defaultCIModule = "github.com/expr-lang/expr@v1.17.0"

// ciEdit is one seeded change: a statement added at the top of the body of
// function fn in file, and a package variable it updates, so that the
// package's code (and, for a function small enough to inline, its export
// data) changes the way a real edit would, and its behaviour does not.
type ciEdit struct {
	file string // slash-separated, relative to the module root
	fn   string // "Name" or "(*Recv).Name" / "(Recv).Name"
	what string // for the report
}

// String names the edit for the report.
func (e ciEdit) String() string { return fmt.Sprintf("%s in %s", e.fn, e.file) }

// editValue is the number the edit numbered n of a history with seed adds:
// fixed by the two, different for different edits.
func editValue(seed uint64, n int) int {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	return 1 + r.IntN(1_000_000)
}

// applyEdit returns src with edit number n (seeded) applied to function fn:
// `ciEditN += V` as the body's first statement and `var ciEditN int` at the
// end of the file, gofmt-formatted.
func applyEdit(src []byte, fn string, seed uint64, n int) ([]byte, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "", src, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	var body *ast.BlockStmt
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && funcName(fd) == fn && fd.Body != nil {
			body = fd.Body
			break
		}
	}
	if body == nil {
		return nil, fmt.Errorf("no function %s", fn)
	}
	name := fmt.Sprintf("ciEdit%d", n)
	at := fset.Position(body.Lbrace).Offset + 1
	var out bytes.Buffer
	out.Write(src[:at])
	fmt.Fprintf(&out, "\n%s += %d", name, editValue(seed, n))
	out.Write(src[at:])
	fmt.Fprintf(&out, "\n// %s is changed by the CI replay benchmark's edit %d.\nvar %s int\n", name, n, name)
	return format.Source(out.Bytes())
}

// funcName is fd's name as ciEdit.fn spells it.
func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	star := ""
	if s, ok := t.(*ast.StarExpr); ok {
		star, t = "*", s.X
	}
	if ix, ok := t.(*ast.IndexExpr); ok { // generic receiver
		t = ix.X
	}
	id, ok := t.(*ast.Ident)
	if !ok {
		return fd.Name.Name
	}
	return "(" + star + id.Name + ")." + fd.Name.Name
}

// fetchModule returns the directory of module@version in the module cache,
// downloading it through the module proxy if needed.
func fetchModule(ctx context.Context, modVersion string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", modVersion)
	cmd.Dir = os.TempDir() // outside any module
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); jerr != nil || info.Dir == "" {
		if info.Error != "" {
			return "", fmt.Errorf("go mod download %s: %s", modVersion, info.Error)
		}
		return "", fmt.Errorf("go mod download %s: %v %v", modVersion, err, jerr)
	}
	return info.Dir, nil
}

// copyTree copies the regular files of src (a read-only module cache
// directory, a floor job's GOCACHE) into dst, writable, replacing files of
// the same name.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// gitRepo is the local "origin" the CI runs clone: a work tree in which the
// benchmark commits its edits, with fixed author and dates so that the
// commits are the same every time.
type gitRepo struct {
	dir  string
	tick int // commits so far; each is a minute after the last
}

func (g *gitRepo) git(args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-c", "user.name=bench", "-c", "user.email=bench@example.invalid",
		"-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = g.dir
	date := fmt.Sprintf("2026-01-01T00:%02d:00Z", g.tick%60)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_DATE="+date, "GIT_COMMITTER_DATE="+date, "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// newGitRepo makes a repository at dir holding the module's files as the
// first commit on main.
func newGitRepo(dir, moduleDir, modVersion string) (*gitRepo, error) {
	if err := copyTree(moduleDir, dir); err != nil {
		return nil, err
	}
	g := &gitRepo{dir: dir}
	if _, err := g.git("init", "-q"); err != nil {
		return nil, err
	}
	if err := g.commitAll("import " + modVersion); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *gitRepo) commitAll(msg string) error {
	g.tick++
	if _, err := g.git("add", "-A"); err != nil {
		return err
	}
	_, err := g.git("commit", "-q", "--allow-empty", "-m", msg)
	return err
}

// edit applies edit number n to the work tree and commits it.
func (g *gitRepo) edit(e ciEdit, seed uint64, n int) error {
	path := filepath.Join(g.dir, filepath.FromSlash(e.file))
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := applyEdit(src, e.fn, seed, n)
	if err != nil {
		return fmt.Errorf("edit %s: %v", e, err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return err
	}
	return g.commitAll(fmt.Sprintf("edit %d: %s", n, e))
}
