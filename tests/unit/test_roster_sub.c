/*
 * test_roster_sub.c — the subscription state machine (src/mod/roster_sub.c)
 * against every row of RFC 6121 Appendix A.2 (outbound) and A.3 (inbound),
 * written here in the RFC's own notation ("None + Pending Out", …), plus
 * the pre-approval rules of section 3.4 and the name helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mod/roster_sub.h"

/* A state in the RFC's words. */
static mod_roster_state_t
st(const char *rfc)
{
    mod_roster_state_t s = { 0 };
    if (strncmp(rfc, "Both", 4) == 0)
        s.sub = MOD_ROSTER_SUB_BOTH;
    else if (strncmp(rfc, "From", 4) == 0)
        s.sub = MOD_ROSTER_SUB_FROM;
    else if (strncmp(rfc, "To", 2) == 0)
        s.sub = MOD_ROSTER_SUB_TO;
    else
        assert_int_equal(strncmp(rfc, "None", 4), 0);
    s.ask = strstr(rfc, "Pending Out") != NULL;
    s.pending_in = strstr(rfc, "Pending In") != NULL || strstr(rfc, "Out+In") != NULL;
    return s;
}

static const char *const STATES[9] = {
    "None", "None + Pending Out", "None + Pending In", "None + Pending Out+In", "To",
    "To + Pending In", "From", "From + Pending Out", "Both",
};

typedef struct row {
    mod_roster_event ev; /* the table */
    const char *from;    /* EXISTING STATE */
    const char *to;      /* RESULTING STATE, NULL = "no state change" */
    int deliver;         /* inbound: Deliver?; outbound: routed */
    int reply;           /* auto-reply subscribed (A.3.1 *) */
} row_t;

#define OUT_S MOD_ROSTER_OUT_SUBSCRIBE
#define OUT_U MOD_ROSTER_OUT_UNSUBSCRIBE
#define OUT_SD MOD_ROSTER_OUT_SUBSCRIBED
#define OUT_UD MOD_ROSTER_OUT_UNSUBSCRIBED
#define IN_S MOD_ROSTER_IN_SUBSCRIBE
#define IN_U MOD_ROSTER_IN_UNSUBSCRIBE
#define IN_SD MOD_ROSTER_IN_SUBSCRIBED
#define IN_UD MOD_ROSTER_IN_UNSUBSCRIBED

static const row_t ROWS[] = {
    /* A.2.1 Outbound Subscribe (always routed, 3.1.2) */
    { OUT_S, "None", "None + Pending Out", 1, 0 },
    { OUT_S, "None + Pending Out", NULL, 1, 0 },
    { OUT_S, "None + Pending In", "None + Pending Out+In", 1, 0 },
    { OUT_S, "None + Pending Out+In", NULL, 1, 0 },
    { OUT_S, "To", NULL, 1, 0 },
    { OUT_S, "To + Pending In", NULL, 1, 0 },
    { OUT_S, "From", "From + Pending Out", 1, 0 },
    { OUT_S, "From + Pending Out", NULL, 1, 0 },
    { OUT_S, "Both", NULL, 1, 0 },
    /* A.2.2 Outbound Unsubscribe (always routed, 3.3.2) */
    { OUT_U, "None", NULL, 1, 0 },
    { OUT_U, "None + Pending Out", "None", 1, 0 },
    { OUT_U, "None + Pending In", NULL, 1, 0 },
    { OUT_U, "None + Pending Out+In", "None + Pending In", 1, 0 },
    { OUT_U, "To", "None", 1, 0 },
    { OUT_U, "To + Pending In", "None + Pending In", 1, 0 },
    { OUT_U, "From", NULL, 1, 0 },
    { OUT_U, "From + Pending Out", "From", 1, 0 },
    { OUT_U, "Both", "From", 1, 0 },
    /* A.2.3 Outbound Subscribed (routed when it approves a pending request;
     * None / None + Pending Out / To become pre-approvals, tested below) */
    { OUT_SD, "None + Pending In", "From", 1, 0 },
    { OUT_SD, "None + Pending Out+In", "From + Pending Out", 1, 0 },
    { OUT_SD, "To + Pending In", "Both", 1, 0 },
    { OUT_SD, "From", NULL, 0, 0 },
    { OUT_SD, "From + Pending Out", NULL, 0, 0 },
    { OUT_SD, "Both", NULL, 0, 0 },
    /* A.2.4 Outbound Unsubscribed (always routed, 3.2.2) */
    { OUT_UD, "None", NULL, 1, 0 },
    { OUT_UD, "None + Pending Out", NULL, 1, 0 },
    { OUT_UD, "None + Pending In", "None", 1, 0 },
    { OUT_UD, "None + Pending Out+In", "None + Pending Out", 1, 0 },
    { OUT_UD, "To", NULL, 1, 0 },
    { OUT_UD, "To + Pending In", "To", 1, 0 },
    { OUT_UD, "From", "None", 1, 0 },
    { OUT_UD, "From + Pending Out", "None + Pending Out", 1, 0 },
    { OUT_UD, "Both", "To", 1, 0 },
    /* A.3.1 Inbound Subscribe */
    { IN_S, "None", "None + Pending In", 1, 0 },
    { IN_S, "None + Pending Out", "None + Pending Out+In", 1, 0 },
    { IN_S, "None + Pending In", NULL, 0, 0 },
    { IN_S, "None + Pending Out+In", NULL, 0, 0 },
    { IN_S, "To", "To + Pending In", 1, 0 },
    { IN_S, "To + Pending In", NULL, 0, 0 },
    { IN_S, "From", NULL, 0, 1 },
    { IN_S, "From + Pending Out", NULL, 0, 1 },
    { IN_S, "Both", NULL, 0, 1 },
    /* A.3.2 Inbound Unsubscribe */
    { IN_U, "None", NULL, 0, 0 },
    { IN_U, "None + Pending Out", NULL, 0, 0 },
    { IN_U, "None + Pending In", "None", 1, 0 },
    { IN_U, "None + Pending Out+In", "None + Pending Out", 1, 0 },
    { IN_U, "To", NULL, 0, 0 },
    { IN_U, "To + Pending In", "To", 1, 0 },
    { IN_U, "From", "None", 1, 0 },
    { IN_U, "From + Pending Out", "None + Pending Out", 1, 0 },
    { IN_U, "Both", "To", 1, 0 },
    /* A.3.3 Inbound Subscribed */
    { IN_SD, "None", NULL, 0, 0 },
    { IN_SD, "None + Pending Out", "To", 1, 0 },
    { IN_SD, "None + Pending In", NULL, 0, 0 },
    { IN_SD, "None + Pending Out+In", "To + Pending In", 1, 0 },
    { IN_SD, "To", NULL, 0, 0 },
    { IN_SD, "To + Pending In", NULL, 0, 0 },
    { IN_SD, "From", NULL, 0, 0 },
    { IN_SD, "From + Pending Out", "Both", 1, 0 },
    { IN_SD, "Both", NULL, 0, 0 },
    /* A.3.4 Inbound Unsubscribed */
    { IN_UD, "None", NULL, 0, 0 },
    { IN_UD, "None + Pending Out", "None", 1, 0 },
    { IN_UD, "None + Pending In", NULL, 0, 0 },
    { IN_UD, "None + Pending Out+In", "None + Pending In", 1, 0 },
    { IN_UD, "To", "None", 1, 0 },
    { IN_UD, "To + Pending In", "None + Pending In", 1, 0 },
    { IN_UD, "From", NULL, 0, 0 },
    { IN_UD, "From + Pending Out", "From", 1, 0 },
    { IN_UD, "Both", "From", 1, 0 },
};

static void
test_roster_sub__appendix_a_every_row(void **state)
{
    (void)state;
    size_t n = sizeof ROWS / sizeof ROWS[0];
    assert_int_equal(n, 69); /* 8 tables x 9 rows, less the 3 pre-approval rows */
    for (size_t i = 0; i < n; i++) {
        const row_t *r = &ROWS[i];
        mod_roster_state_t old = st(r->from);
        mod_roster_state_t want = st(r->to ? r->to : r->from);
        mod_roster_sub_result_t got = mod_roster_sub_apply(old, r->ev);
        char what[128];
        snprintf(what, sizeof what, "row %zu: %s on '%s'", i, mod_roster_event_type(r->ev),
                 r->from);
        if (got.state.sub != want.sub || got.state.ask != want.ask ||
            got.state.pending_in != want.pending_in || got.state.approved ||
            got.forward != (bool)r->deliver ||
            got.reply != (r->reply ? MOD_ROSTER_REPLY_SUBSCRIBED : MOD_ROSTER_REPLY_NONE))
            fail_msg("%s: got sub=%d ask=%d in=%d appr=%d fwd=%d reply=%d", what, got.state.sub,
                     got.state.ask, got.state.pending_in, got.state.approved, got.forward,
                     got.reply);
        assert_int_equal(got.changed, r->to != NULL);
        /* A push is due exactly when subscription or ask changed. */
        bool visible = got.state.sub != old.sub || got.state.ask != old.ask;
        if (got.push != visible)
            fail_msg("%s: push=%d", what, got.push);
    }
}

/* Every event on every state keeps the A.1 invariants. */
static void
test_roster_sub__invariants(void **state)
{
    (void)state;
    for (int s = 0; s < 9; s++)
        for (int appr = 0; appr < 2; appr++)
            for (int ev = 0; ev < MOD_ROSTER_EVENT_COUNT; ev++) {
                mod_roster_state_t old = st(STATES[s]);
                old.approved = appr && !(old.sub & MOD_ROSTER_SUB_FROM);
                mod_roster_sub_result_t r = mod_roster_sub_apply(old, (mod_roster_event)ev);
                assert_false(r.state.ask && (r.state.sub & MOD_ROSTER_SUB_TO));
                assert_false(r.state.pending_in && (r.state.sub & MOD_ROSTER_SUB_FROM));
                assert_false(r.state.approved && (r.state.sub & MOD_ROSTER_SUB_FROM));
                if (ev < 4)
                    assert_int_equal(r.reply, MOD_ROSTER_REPLY_NONE);
            }
    /* Out of range: nothing. */
    mod_roster_sub_result_t r = mod_roster_sub_apply(st("To"), MOD_ROSTER_EVENT_COUNT);
    assert_false(r.changed || r.forward || r.push);
    assert_int_equal(r.state.sub, MOD_ROSTER_SUB_TO);
}

/* RFC 6121 3.4: pre-approval noted (not routed), consumed by the contact's
 * subscribe (auto-reply, not delivered), cancelled by unsubscribed. */
static void
test_roster_sub__preapproval(void **state)
{
    (void)state;
    const struct { const char *from, *after_in; } cases[] = {
        { "None", "From" },
        { "None + Pending Out", "From + Pending Out" },
        { "To", "Both" },
    };
    for (size_t i = 0; i < 3; i++) {
        mod_roster_sub_result_t a = mod_roster_sub_apply(st(cases[i].from), OUT_SD);
        mod_roster_state_t want = st(cases[i].from);
        assert_int_equal(a.state.sub, want.sub);
        assert_int_equal(a.state.ask, want.ask);
        assert_true(a.state.approved);
        assert_false(a.forward);
        assert_true(a.push && a.changed);
        /* Again: nothing new. */
        mod_roster_sub_result_t a2 = mod_roster_sub_apply(a.state, OUT_SD);
        assert_false(a2.changed || a2.push || a2.forward);
        /* The contact asks: approved by the server. */
        mod_roster_sub_result_t b = mod_roster_sub_apply(a.state, IN_S);
        want = st(cases[i].after_in);
        assert_int_equal(b.state.sub, want.sub);
        assert_int_equal(b.state.ask, want.ask);
        assert_false(b.state.pending_in);
        assert_false(b.state.approved);
        assert_false(b.forward);
        assert_int_equal(b.reply, MOD_ROSTER_REPLY_SUBSCRIBED);
        assert_true(b.push);
        /* Cancelled instead: approved cleared, routed, pushed. */
        mod_roster_sub_result_t c = mod_roster_sub_apply(a.state, OUT_UD);
        assert_false(c.state.approved);
        assert_int_equal(c.state.sub, st(cases[i].from).sub);
        assert_true(c.forward && c.push);
    }
    /* Approving a pending request is not a pre-approval. */
    mod_roster_sub_result_t r = mod_roster_sub_apply(st("None + Pending In"), OUT_SD);
    assert_false(r.state.approved);
    /* Inbound unsubscribe leaves a pre-approval alone. */
    mod_roster_state_t pa = st("None");
    pa.approved = true;
    r = mod_roster_sub_apply(pa, IN_U);
    assert_true(r.state.approved);
    assert_false(r.changed);
}

static void
test_roster_sub__names(void **state)
{
    (void)state;
    assert_string_equal(xd_roster_sub_name(MOD_ROSTER_SUB_BOTH), "both");
    assert_string_equal(xd_roster_sub_name(MOD_ROSTER_SUB_FROM), "from");
    assert_null(xd_roster_sub_name((xd_roster_sub)7));
    assert_int_equal(xd_roster_sub_parse("to"), MOD_ROSTER_SUB_TO);
    assert_int_equal(xd_roster_sub_parse("remove"), -1);
    assert_int_equal(xd_roster_sub_parse(NULL), -1);
    assert_int_equal(mod_roster_event_of("subscribed", true), MOD_ROSTER_IN_SUBSCRIBED);
    assert_int_equal(mod_roster_event_of("unsubscribe", false), MOD_ROSTER_OUT_UNSUBSCRIBE);
    assert_int_equal(mod_roster_event_of("probe", false), -1);
    assert_string_equal(mod_roster_event_type(MOD_ROSTER_IN_UNSUBSCRIBED), "unsubscribed");
    assert_null(mod_roster_event_type(MOD_ROSTER_EVENT_COUNT));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roster_sub__appendix_a_every_row),
        cmocka_unit_test(test_roster_sub__invariants),
        cmocka_unit_test(test_roster_sub__preapproval),
        cmocka_unit_test(test_roster_sub__names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
