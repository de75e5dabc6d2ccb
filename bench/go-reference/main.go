// The Go reference for cargo xtask bench: the same hello handler as
// bench-server, with net/http/pprof mounted, on 127.0.0.1.
package main

import (
	"flag"
	"log"
	"net/http"
	_ "net/http/pprof"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6070", "listen address")
	flag.Parse()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello\n"))
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
