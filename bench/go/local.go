// local.go: workload 7 for Go's own channels, the counterpart of
// bench/local.c: the same four tests, the same result line (peer=go).
// Standard library only; run.sh builds it with `go build`.
//
// usage: local handoff|spawn|buffered|parked N
package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// msgSize is the byte count of a buffered test message, as in local.c.
const msgSize = 64

// rss returns this process's VmRSS in bytes.
func rss() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(s.Text())[1], 10, 64)
			return kb * 1024
		}
	}
	return -1
}

func peer() string {
	return fmt.Sprintf("go%d", runtime.GOMAXPROCS(0))
}

func okFlag(ok bool) int {
	if ok {
		return 1
	}
	return 0
}

// handoff: n round trips between two goroutines on unbuffered channels.
func handoff(n int64) bool {
	ping, pong := make(chan int64), make(chan int64)
	go func() {
		for i := int64(0); i < n; i++ {
			pong <- <-ping
		}
	}()
	ok := true
	t := time.Now()
	for i := int64(0); i < n; i++ {
		ping <- i
		if <-pong != i {
			ok = false
		}
	}
	d := time.Since(t)
	fmt.Printf("workload=local test=handoff peer=%s n=%d ns=%.1f ok=%d\n", peer(), 2*n,
		float64(d.Nanoseconds())/float64(2*n), okFlag(ok))
	return ok
}

// spawn: start a goroutine and wait for it to finish, n times.
func spawn(n int64) bool {
	done := make(chan struct{})
	t := time.Now()
	for i := int64(0); i < n; i++ {
		go func() { done <- struct{}{} }()
		<-done
	}
	d := time.Since(t)
	fmt.Printf("workload=local test=spawn peer=%s n=%d ns=%.1f ok=1\n", peer(), n,
		float64(d.Nanoseconds())/float64(n))
	return true
}

// buffered: n 64-byte messages through a channel of capacity 1024.
func buffered(n int64) bool {
	ch := make(chan [msgSize]byte, 1024)
	go func() {
		var m [msgSize]byte
		for i := int64(0); i < n; i++ {
			binary.LittleEndian.PutUint64(m[:], uint64(i))
			ch <- m
		}
		close(ch)
	}()
	var count, sum, xor, wantSum, wantXor uint64
	t := time.Now()
	for m := range ch {
		seq := binary.LittleEndian.Uint64(m[:])
		count++
		sum += seq
		xor ^= seq
	}
	d := time.Since(t)
	for i := uint64(0); i < uint64(n); i++ {
		wantSum += i
		wantXor ^= i
	}
	ok := count == uint64(n) && sum == wantSum && xor == wantXor
	fmt.Printf("workload=local test=buffered peer=%s n=%d msgs_per_s=%.0f ok=%d\n", peer(), n,
		float64(count)/d.Seconds(), okFlag(ok))
	return ok
}

// parked: RSS per goroutine blocked in a receive.
func parked(n int64) bool {
	ch := make(chan [msgSize]byte)
	var started, woken int64
	var wg sync.WaitGroup
	runtime.GC()
	before := rss()
	for i := int64(0); i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			atomic.AddInt64(&started, 1)
			if _, more := <-ch; !more {
				atomic.AddInt64(&woken, 1)
			}
		}()
	}
	for atomic.LoadInt64(&started) < n {
		runtime.Gosched()
	}
	after := rss()
	close(ch)
	wg.Wait()
	ok := woken == n
	fmt.Printf("workload=local test=parked peer=%s n=%d bytes=%.0f ok=%d\n", peer(), n,
		float64(after-before)/float64(n), okFlag(ok))
	return ok
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: local handoff|spawn|buffered|parked N")
		os.Exit(2)
	}
	n, err := strconv.ParseInt(os.Args[2], 10, 64)
	if err != nil || n <= 0 {
		fmt.Fprintln(os.Stderr, "local: bad N")
		os.Exit(2)
	}
	tests := map[string]func(int64) bool{
		"handoff": handoff, "spawn": spawn, "buffered": buffered, "parked": parked,
	}
	f, found := tests[os.Args[1]]
	if !found {
		fmt.Fprintln(os.Stderr, "local: unknown test", os.Args[1])
		os.Exit(2)
	}
	if !f(n) {
		os.Exit(1)
	}
}
