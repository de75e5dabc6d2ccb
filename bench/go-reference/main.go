// The Go reference for cargo xtask bench: the same hello handler as
// bench-server (or, with -files DIR, a file server like its --files), with
// net/http/pprof mounted, on 127.0.0.1.
//
// With -accuracy N it instead burns CPU on two threads in a 3:1 ratio for
// N seconds while runtime/pprof profiles them into -out, and prints what
// the kernel counted (bench-server cpu-total reads the profile).
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"
)

func cpuSeconds(who int) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

var sink uint64

func spin(d time.Duration) {
	start := time.Now()
	x := uint64(0x9e3779b97f4a7c15)
	for time.Since(start) < d {
		for i := 0; i < 1000; i++ {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
		}
	}
	sink += x
}

//go:noinline
func burnThree(until time.Time) float64 {
	runtime.LockOSThread()
	for time.Now().Before(until) {
		spin(30 * time.Millisecond)
	}
	return cpuSeconds(1) // RUSAGE_THREAD
}

//go:noinline
func burnOne(until time.Time) float64 {
	runtime.LockOSThread()
	for time.Now().Before(until) {
		spin(10 * time.Millisecond)
		time.Sleep(20 * time.Millisecond)
	}
	return cpuSeconds(1)
}

func accuracy(seconds int, out string) {
	f, err := os.Create(out)
	if err != nil {
		log.Fatal(err)
	}
	before := cpuSeconds(syscall.RUSAGE_SELF)
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Fatal(err)
	}
	until := time.Now().Add(time.Duration(seconds) * time.Second)
	var three, one float64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); three = burnThree(until) }()
	go func() { defer wg.Done(); one = burnOne(until) }()
	wg.Wait()
	pprof.StopCPUProfile()
	f.Close()
	after := cpuSeconds(syscall.RUSAGE_SELF)
	fmt.Printf("accuracy.kernel_three_s=%.2f\n", three)
	fmt.Printf("accuracy.kernel_one_s=%.2f\n", one)
	fmt.Printf("accuracy.kernel_process_s=%.2f\n", after-before)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6070", "listen address")
	seconds := flag.Int("accuracy", 0, "burn 3:1 for this many seconds under runtime/pprof instead of serving")
	out := flag.String("out", "go-accuracy.pb.gz", "where -accuracy writes its profile")
	files := flag.String("files", "", "serve this directory's files at / (http.FileServer) instead of hello")
	flag.Parse()
	if *seconds > 0 {
		accuracy(*seconds, *out)
		return
	}
	if *files != "" {
		http.Handle("/", http.FileServer(http.Dir(*files)))
	} else {
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("hello\n"))
		})
	}
	log.Fatal(http.ListenAndServe(*addr, nil))
}
