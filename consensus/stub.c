/* Temporary stubs: the API compiles and links while the core is written. */
#include <stdlib.h>
#include <string.h>

#include "consensus/raft.h"

struct raft {
    struct raft_options o;
};

void raft_options_init(struct raft_options *o, uint64_t id, uint64_t seed)
{
    memset(o, 0, sizeof *o);
    o->id = id;
    o->seed = seed;
}
int raft_create(const struct raft_options *opts, const struct raft_initial_state *initial,
                struct raft **r)
{
    (void)initial;
    *r = calloc(1, sizeof **r);
    if (*r == NULL) {
        return RAFT_ENOMEM;
    }
    (*r)->o = *opts;
    return 0;
}
void raft_destroy(struct raft *r) { free(r); }
int raft_bootstrap_entry(const struct raft_config *c, struct raft_entry *entry)
{
    (void)c;
    (void)entry;
    return RAFT_ENOMEM;
}
#define STUB_OUT memset(out, 0, sizeof *out)
int raft_step(struct raft *r, const struct raft_event *ev, struct raft_update *out)
{ (void)r; (void)ev; STUB_OUT; return 0; }
int raft_propose(struct raft *r, uint64_t now_ms, uint8_t type, struct raft_buf *buf,
                 uint64_t cookie, struct raft_update *out)
{ (void)r; (void)now_ms; (void)type; (void)buf; (void)cookie; STUB_OUT; return RAFT_ENOTLEADER; }
int raft_add(struct raft *r, uint64_t now_ms, const struct raft_server *s, uint64_t cookie,
             struct raft_update *out)
{ (void)r; (void)now_ms; (void)s; (void)cookie; STUB_OUT; return RAFT_ENOTLEADER; }
int raft_remove(struct raft *r, uint64_t now_ms, uint64_t id, uint64_t cookie, struct raft_update *out)
{ (void)r; (void)now_ms; (void)id; (void)cookie; STUB_OUT; return RAFT_ENOTLEADER; }
int raft_promote(struct raft *r, uint64_t now_ms, uint64_t id, uint64_t cookie, struct raft_update *out)
{ (void)r; (void)now_ms; (void)id; (void)cookie; STUB_OUT; return RAFT_ENOTLEADER; }
int raft_demote(struct raft *r, uint64_t now_ms, uint64_t id, uint64_t cookie, struct raft_update *out)
{ (void)r; (void)now_ms; (void)id; (void)cookie; STUB_OUT; return RAFT_ENOTLEADER; }
int raft_transfer(struct raft *r, uint64_t now_ms, uint64_t target, struct raft_update *out)
{ (void)r; (void)now_ms; (void)target; STUB_OUT; return RAFT_ENOTLEADER; }
int raft_read_index(struct raft *r, uint64_t now_ms, uint64_t cookie, struct raft_update *out)
{ (void)r; (void)now_ms; (void)cookie; STUB_OUT; return RAFT_ENOTLEADER; }
int raft_read_lease(struct raft *r, uint64_t now_ms, uint64_t *index)
{ (void)r; (void)now_ms; (void)index; return RAFT_ENOTLEADER; }
int raft_recover(struct raft *r, uint64_t now_ms, const struct raft_config *c, struct raft_update *out)
{ (void)r; (void)now_ms; (void)c; STUB_OUT; return RAFT_EBADARG; }
uint8_t raft_state(const struct raft *r) { (void)r; return RAFT_FOLLOWER; }
uint64_t raft_id(const struct raft *r) { return r->o.id; }
uint64_t raft_term(const struct raft *r) { (void)r; return 0; }
uint64_t raft_vote(const struct raft *r) { (void)r; return 0; }
uint64_t raft_leader(const struct raft *r) { (void)r; return 0; }
uint64_t raft_commit_index(const struct raft *r) { (void)r; return 0; }
uint64_t raft_last_index(const struct raft *r) { (void)r; return 0; }
uint64_t raft_last_term(const struct raft *r) { (void)r; return 0; }
uint64_t raft_first_index(const struct raft *r) { (void)r; return 1; }
uint64_t raft_persisted_index(const struct raft *r) { (void)r; return 0; }
uint64_t raft_applied_floor(const struct raft *r) { (void)r; return 0; }
uint64_t raft_term_at(const struct raft *r, uint64_t index) { (void)r; (void)index; return 0; }
const struct raft_config *raft_configuration(const struct raft *r) { (void)r; return NULL; }
uint64_t raft_transfer_target(const struct raft *r) { (void)r; return 0; }
int raft_progress(const struct raft *r, uint64_t id, struct raft_progress_info *info)
{ (void)r; (void)id; (void)info; return RAFT_ENOTLEADER; }
