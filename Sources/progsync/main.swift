// The `progsync` executable: everything lives in the ProgSyncCLI library so tests can reach it.
import ProgSyncCLI

await ProgSyncCommand.main()
