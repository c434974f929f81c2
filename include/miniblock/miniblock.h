/* miniblock C API: see later commit. */
#pragma once
