;; attack: call a budgeted host service past its budget, forever: `llm`
;;         `chat` asking for 1 000 000 completion tokens under a grant of
;;         1000, in an endless loop (a flood of expensive requests).
;; expect: every request is refused with `budget-exhausted` before anything
;;         is sent (the guest traps if any other answer comes back); the loop
;;         ends out of fuel; no token is spent.
(module
  (import "vivarium:agent/llm@0.1.0" "chat" (func $chat (param i32 i32 i32 i32 i32 i32 f32 i32)))
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
  (data (i32.const 256) "m")
  ;; one message: role 1 (user), content at 288, 2 bytes
  (data (i32.const 264) "\01\00\00\00\20\01\00\00\02\00\00\00")
  (data (i32.const 288) "hi")
  ;; solve(task) — locals 6 and 7 are the task input's pointer and length.
  (func (export "vivarium:agent/task-agent@0.1.0#solve")
    (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (loop $l
      ;; chat({model: "m", messages: [{role: user, content: "hi"}],
      ;;       max-tokens: 1000000, temperature: none}) -> result at 320
      ;; (everything below 1024, where the allocator never hands out memory)
      (call $chat (i32.const 256) (i32.const 1) (i32.const 264) (i32.const 1)
                  (i32.const 1000000) (i32.const 0) (f32.const 0) (i32.const 320))
      ;; err(budget-exhausted(_)) is result tag 1, error tag 1.
      (if (i32.ne (i32.load8_u (i32.const 320)) (i32.const 1)) (then unreachable))
      (if (i32.ne (i32.load8_u (i32.const 324)) (i32.const 1)) (then unreachable))
      (br $l))
    unreachable)
  (func (export "vivarium:agent/meta-agent@0.1.0#improve")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    unreachable)
)
