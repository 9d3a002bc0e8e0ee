// SPDX-License-Identifier: GPL-2.0
/* What a compiled object can hold beyond libbpf-tools' objects, for the ELF loader's
 * tests (compiled with clang at test time, loaded by pybpf and by libbpf, compared). */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct {
	int pid;
	int tgid;
	char comm[16];
} __attribute__((preserve_access_index));

struct task_struct___old {
	long state;
} __attribute__((preserve_access_index));

struct task_struct___new {
	unsigned int __state;
} __attribute__((preserve_access_index));

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
};

struct inner inner_a SEC(".maps");
struct inner inner_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 3);
	__type(key, __u32);
	__array(values, struct inner);
} outer SEC(".maps") = {
	.values = { [0] = &inner_a, [2] = &inner_b },
};

int tail_target(void *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = { [1] = (void *)&tail_target },
};

struct event {
	__u32 pid;
	__u32 loops;
	__u64 state;
	char comm[16];
};

struct event *unused_event __attribute__((unused)); /* puts struct event in the BTF */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

const volatile __u32 target_pid = 0;
const volatile char label[8] = "pybpf";
__u64 counter = 7;                       /* .data */
__u64 hits;                              /* .bss */
__u32 custom_data SEC(".data.custom") = 3;
const volatile __u32 custom_ro SEC(".rodata.custom") = 11;

extern int LINUX_KERNEL_VERSION __kconfig;
extern int CONFIG_HZ __kconfig __weak;
extern _Bool CONFIG_BPF_SYSCALL __kconfig __weak;
extern _Bool CONFIG_PYBPF_DOES_NOT_EXIST __kconfig __weak;

static __noinline __u64 add(__u64 a, __u64 b)
{
	return a * 3 + b;
}

__noinline int global_helper(__u32 x)
{
	return x + custom_data + custom_ro;
}

static int loop_body(__u32 index, void *data)
{
	__u64 *sum = data;

	*sum = add(*sum, index);
	return 0;
}

SEC("tp_btf/sched_switch")
int on_switch(__u64 *ctx)
{
	struct task_struct *next = (void *)ctx[2];
	struct event *e;
	__u64 sum = 0;
	__u32 key = 0;
	void *inner;

	if (target_pid && BPF_CORE_READ(next, tgid) != target_pid)
		return 0;
	bpf_loop(4, loop_body, &sum, 0);
	__sync_fetch_and_add(&hits, 1);
	counter += sum;
	inner = bpf_map_lookup_elem(&outer, &key);
	if (inner)
		bpf_map_lookup_elem(inner, &key);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = BPF_CORE_READ(next, pid);
	e->loops = global_helper(sum) + LINUX_KERNEL_VERSION + CONFIG_HZ + CONFIG_BPF_SYSCALL +
		   CONFIG_PYBPF_DOES_NOT_EXIST + label[0];
	if (bpf_core_field_exists(struct task_struct___new, __state))
		e->state = BPF_CORE_READ((struct task_struct___new *)next, __state);
	else
		e->state = BPF_CORE_READ((struct task_struct___old *)next, state);
	bpf_core_read_str(e->comm, sizeof(e->comm), &next->comm);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("raw_tp/sched_wakeup")
int on_wakeup(void *ctx)
{
	bpf_tail_call(ctx, &jumps, 1);
	return 0;
}

SEC("raw_tp/sched_switch")
int tail_target(void *ctx)
{
	__sync_fetch_and_add(&hits, add(1, 2));
	bpf_printk("tail %d", custom_data);
	return 0;
}

SEC("?raw_tp/sched_wakeup_new")
int not_autoloaded(void *ctx)
{
	return global_helper(1);
}

char LICENSE[] SEC("license") = "GPL";
