;; attack: fill the persistent `memory` store past its quota: `set` 4 KiB
;;         values under new keys until the host says no.
;; expect: the 16th `set` is refused with `quota-exceeded` (15 entries of
;;         4104 bytes fit in 64 KiB); the guest answers with the host's
;;         message; nothing past the quota is stored.
(module
  (import "vivarium:agent/memory@0.1.0" "set" (func $set (param i32 i32 i32 i32 i32)))
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
  (data (i32.const 2048) "key-")
  ;; solve(task) — locals 6 and 7 are the task input's pointer and length.
  (func (export "vivarium:agent/task-agent@0.1.0#solve")
    (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) (local i32)
    (block $refused
      (loop $l
        ;; key "key-" + 4 letters from the counter in local 8
        (i32.store8 (i32.const 2052) (i32.add (i32.const 97) (i32.and (local.get 8) (i32.const 15))))
        (i32.store8 (i32.const 2053) (i32.add (i32.const 97) (i32.and (i32.shr_u (local.get 8) (i32.const 4)) (i32.const 15))))
        (i32.store8 (i32.const 2054) (i32.add (i32.const 97) (i32.and (i32.shr_u (local.get 8) (i32.const 8)) (i32.const 15))))
        (i32.store8 (i32.const 2055) (i32.add (i32.const 97) (i32.and (i32.shr_u (local.get 8) (i32.const 12)) (i32.const 15))))
        (call $set (i32.const 2048) (i32.const 8) (i32.const 8192) (i32.const 4096) (i32.const 3072))
        (br_if $refused (i32.load8_u (i32.const 3072)))
        (local.set 8 (i32.add (local.get 8) (i32.const 1)))
        (br $l)))
    ;; err(quota-exceeded(message)) is result tag 1, error tag 0.
    (if (i32.ne (i32.load8_u (i32.const 3076)) (i32.const 0)) (then unreachable))
    (call $answer (i32.load (i32.const 3080)) (i32.load (i32.const 3084))))
  (func (export "vivarium:agent/meta-agent@0.1.0#improve")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    unreachable)
)
