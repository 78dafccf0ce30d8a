from mailengine.observe.acceptwatch import AcceptFailureWatch


def test_failed_accepts_for_want_of_descriptors_raise_the_alarm_and_others_do_not():
    told = []
    watch = AcceptFailureWatch(told.append)
    watch(
        {"log_format": "Could not accept new connection ({acceptError})", "acceptError": "EMFILE"}
    )
    watch({"log_format": "EMFILE recovery: Closed socket from {address}", "address": "x"})
    watch(
        {
            "log_format": "Could not accept new connection ({acceptError})",
            "acceptError": "ECONNABORTED",
        }
    )
    watch({"log_format": "something else"})
    watch({})
    assert told == ["accepting an inbound SMTP or web connection"] * 2
