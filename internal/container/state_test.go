package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hullrt/hull/internal/oci"
)

func TestDirName(t *testing.T) {
	for _, id := range []string{"c1", strings.Repeat("a", maxDirName)} {
		if got := DirName(id); got != id {
			t.Errorf("DirName(%q) = %q, want the id itself", id, got)
		}
	}
	long := strings.Repeat("8d1d5dd986d6", 5) + "0123"
	got := DirName(long)
	if !strings.HasPrefix(got, "8d1d5dd986d6~") || len(got) > maxDirName {
		t.Errorf("DirName(%q) = %q, want 8d1d5dd986d6~<digest>, at most %d bytes", long, got, maxDirName)
	}
	if oci.ValidateID(got) == nil {
		t.Errorf("DirName(%q) = %q is itself a valid id", long, got)
	}
	if got == DirName(long[:63]+"f") {
		t.Error("ids differing in their last digit share a directory")
	}
}

// Long ids: the record is found again by id and listed under its id.
func TestLongIDRoundTrip(t *testing.T) {
	r := Root(t.TempDir())
	id := strings.Repeat("0123456789abcdef", 4)
	h, err := r.Create(State{ID: id, Status: Created})
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if _, err := os.Stat(filepath.Join(string(r), DirName(id), stateFile)); err != nil {
		t.Fatal(err)
	}
	if st, err := r.Load(id); err != nil || st.ID != id {
		t.Fatalf("Load = %+v, %v", st, err)
	}
	if _, err := r.Create(State{ID: id}); err != ErrExist {
		t.Fatalf("second Create: %v, want ErrExist", err)
	}
	list, err := r.List()
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if len(r.Socket(id))-len(r) > 60 {
		t.Errorf("socket path %s: too much added to the root", r.Socket(id))
	}
}
