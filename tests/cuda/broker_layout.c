/* Prints the layout of include/tslice_broker.h, for a test to compare with
 * tslice-proto's. */
#include <stddef.h>
#include <stdio.h>
#include "../../include/tslice_broker.h"

int main(void) {
  printf("budget_dev=%zu budget_page=%zu budget_dev_off=%zu slot_len_off=%zu mem_mine_off=%zu\n",
         sizeof(struct tslice_budget_dev), sizeof(struct tslice_budget_page),
         offsetof(struct tslice_budget_page, dev), offsetof(struct tslice_budget_dev, slot_len_ns),
         offsetof(struct tslice_budget_dev, mem_mine));
  printf("process_dev=%zu process_page=%zu process_dev_off=%zu mem_peak_off=%zu\n",
         sizeof(struct tslice_process_dev), sizeof(struct tslice_process_page),
         offsetof(struct tslice_process_page, dev), offsetof(struct tslice_process_dev, mem_peak));
  return 0;
}
