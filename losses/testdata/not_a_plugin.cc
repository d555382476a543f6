// A shared library that is not a loss plugin: it exports no
// distill_loss_plugin_entry. Used by plugin_loader_test.
extern "C" int distill_test_not_a_plugin() { return 7; }
