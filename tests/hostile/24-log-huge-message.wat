;; attack: `log` one 40 MiB message, so the host copies 40 MiB out of the
;;         sandbox for a log line that keeps at most 4 KiB.
;; expect: memory-limit: refused while copying (the host-call budget is
;;         about the output cap), before the host allocates it.
(module
  (import "vivarium:agent/log@0.1.0" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  ;; A bump allocator: aligns, bumps, grows memory when needed.
  (func $realloc (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (block $ok
      (loop $grow
        (br_if $ok (i32.le_u (global.get $bump) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (local.get $p))
  ;; ok({output: string(ptr, len), notes: none}) in the return area at 0.
  (func $answer (param $ptr i32) (param $len i32) (result i32)
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (local.get $ptr))
    (i32.store (i32.const 8) (local.get $len))
    (i32.store8 (i32.const 12) (i32.const 0))
    (i32.const 0))
  ;; solve(task) — locals 6 and 7 are the task input's pointer and length.
  (func (export "vivarium:agent/task-agent@0.1.0#solve")
    (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (if (i32.eq (memory.grow (i32.const 640)) (i32.const -1)) (then unreachable))
    (call $log (i32.const 2) (i32.const 65536) (i32.const 41943040))
    (call $answer (local.get 6) (local.get 7)))
  (func (export "vivarium:agent/meta-agent@0.1.0#improve")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    unreachable)
)
